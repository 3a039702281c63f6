#include "spe/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstring>
#include <mutex>
#include <sstream>

#include "spe/util/files.h"
#include "spe/util/hash.h"

namespace spe::train {
namespace {

constexpr char kMagic[8] = {'S', 'P', 'E', 'C', 'K', 'P', 'T', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kPreamble = sizeof kMagic + 4 + 8 + 8;

at::Tensor int_tensor(int64_t value) { return at::full({1}, value, at::kLong); }

std::string wrap(const std::string& payload) {
  std::string out(kMagic, sizeof kMagic);
  const uint32_t version = kFormatVersion;
  const uint64_t length = payload.size(), checksum = fnv1a(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&length), 8);
  out.append(reinterpret_cast<const char*>(&checksum), 8);
  return out + payload;
}

// The archive inside a checkpoint file, after checking everything around it.
std::string unwrap(const std::string& bytes, const std::string& path) {
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw std::runtime_error(fmt::format("'{}' is not an spe checkpoint (it does not start with SPECKPT)", path));
  if (bytes.size() < kPreamble)
    throw std::runtime_error(fmt::format("checkpoint '{}' is truncated ({} bytes)", path, bytes.size()));
  uint32_t version = 0;
  uint64_t length = 0, checksum = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&length, bytes.data() + 12, 8);
  std::memcpy(&checksum, bytes.data() + 20, 8);
  if (version != kFormatVersion)
    throw std::runtime_error(fmt::format("checkpoint '{}' has format version {}; this spe reads version {}{}", path,
                                         version, kFormatVersion,
                                         version > kFormatVersion ? " (it was written by a newer spe)" : ""));
  if (length != bytes.size() - kPreamble)
    throw std::runtime_error(fmt::format("checkpoint '{}' is {}: its payload should be {} bytes, the file holds {}",
                                         path, length > bytes.size() - kPreamble ? "truncated" : "followed by extra bytes",
                                         length, bytes.size() - kPreamble));
  if (fnv1a(bytes.data() + kPreamble, length) != checksum)
    throw std::runtime_error(fmt::format("checkpoint '{}' is corrupt: its checksum does not match its contents", path));
  return bytes.substr(kPreamble);
}

// A count the checkpoint records under `key`: one integer, at least `minimum`.
int64_t count_of(const at::Tensor& t, const std::string& key, int64_t minimum) {
  const int64_t value = t.item<int64_t>();
  if (value < minimum) throw std::runtime_error(fmt::format("'{}' is {}, expected at least {}", key, value, minimum));
  return value;
}

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key, int64_t minimum = 0) {
  at::Tensor t;
  archive.read(key, t);
  return count_of(t, key, minimum);
}

std::string read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  archive.read(key, value);
  return value.toStringRef();
}

CheckpointHeader read_header_entries(torch::serialize::InputArchive& archive, const std::string& path) {
  CheckpointHeader header;
  header.config = parse_config(read_string(archive, "config"), {}, path + " (its configuration)");
  data::DatasetInfo& d = header.data;
  d.task = read_string(archive, "data/task");
  d.vocab_size = read_int(archive, "data/vocab_size", 2);
  d.num_classes = read_int(archive, "data/num_classes");
  d.fields = read_int(archive, "data/fields", 1);
  at::Tensor grid;
  archive.read("data/grid", grid);
  d.grid.assign(grid.data_ptr<int64_t>(), grid.data_ptr<int64_t>() + grid.numel());
  TrainingState& s = header.state;
  s.step = read_int(archive, "state/step");
  s.sampler.epoch = read_int(archive, "state/epoch");
  s.sampler.offset = read_int(archive, "state/offset");
  s.has_best = read_int(archive, "state/has_best") != 0;
  at::Tensor best;
  archive.read("state/best_metric", best);
  s.best_metric = best.item<double>();
  at::Tensor world_size;  // absent from checkpoints of single-process runs before data parallelism
  s.world_size = archive.try_read("state/world_size", world_size) ? count_of(world_size, "state/world_size", 1) : 1;
  return header;
}

// What the checkpoint says about itself; an entry missing or of the wrong kind is an error
// naming the file (only a file written by something else, with a valid checksum, gets here).
CheckpointHeader read_header(torch::serialize::InputArchive& archive, const std::string& path) {
  try {
    return read_header_entries(archive, path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' lacks what spe writes: {}", path, e.what_without_backtrace()));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}': {}", path, e.what()));
  }
}

torch::serialize::InputArchive open_archive(const std::string& path) {
  const std::string payload = unwrap(read_file(path), path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(payload.data(), payload.size());
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' cannot be read: {}", path, e.what_without_backtrace()));
  }
  return archive;
}

// "rng/cpu" and "rng/draws" for rank 0 (and single-process runs), "rng/cpu/rank1", ... for the others.
std::string generator_key(const char* stream, int64_t rank) {
  return rank == 0 ? fmt::format("rng/{}", stream) : fmt::format("rng/{}/rank{}", stream, rank);
}

}  // namespace

void save_checkpoint(const std::string& path, const CheckpointHeader& header, nn::ModelImpl& model,
                     torch::optim::Optimizer* optimizer, const std::vector<RankGenerators>& ranks) {
  torch::serialize::OutputArchive archive;
  archive.write("config", c10::IValue(to_yaml(header.config)));
  archive.write("data/task", c10::IValue(header.data.task));
  archive.write("data/vocab_size", int_tensor(header.data.vocab_size));
  archive.write("data/num_classes", int_tensor(header.data.num_classes));
  archive.write("data/fields", int_tensor(header.data.fields));
  archive.write("data/grid", at::tensor(at::ArrayRef<int64_t>(header.data.grid), at::kLong));
  archive.write("state/step", int_tensor(header.state.step));
  archive.write("state/epoch", int_tensor(header.state.sampler.epoch));
  archive.write("state/offset", int_tensor(header.state.sampler.offset));
  archive.write("state/has_best", int_tensor(header.state.has_best));
  archive.write("state/best_metric", at::full({1}, header.state.best_metric, at::kDouble));
  archive.write("state/world_size", int_tensor(header.state.world_size));
  torch::serialize::OutputArchive model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  if (optimizer) {
    torch::serialize::OutputArchive optimizer_archive;
    optimizer->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      archive.write(generator_key("cpu", static_cast<int64_t>(rank)), ranks[rank].global);
      if (ranks[rank].draws.defined()) archive.write(generator_key("draws", static_cast<int64_t>(rank)), ranks[rank].draws);
    }
  }
  std::ostringstream stream;
  archive.save_to(stream);
  write_file_atomically(path, wrap(stream.str()));
}

CheckpointHeader read_checkpoint_header(const std::string& path) {
  torch::serialize::InputArchive archive = open_archive(path);
  return read_header(archive, path);
}

CheckpointHeader load_checkpoint(const std::string& path, nn::ModelImpl& model, torch::optim::Optimizer* optimizer,
                                 const Config* expected, int64_t rank, at::Generator* draws) {
  torch::serialize::InputArchive archive = open_archive(path);
  CheckpointHeader header = read_header(archive, path);
  if (expected && model_yaml(*expected) != model_yaml(header.config))
    throw std::runtime_error(fmt::format(
        "checkpoint '{}' holds another model than the configuration describes.\ncheckpoint:\n{}\nconfiguration:\n{}",
        path, model_yaml(header.config), model_yaml(*expected)));
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model.load(model_archive);
    if (optimizer) {
      torch::serialize::InputArchive optimizer_archive;
      archive.read("optimizer", optimizer_archive);
      optimizer->load(optimizer_archive);
      at::Tensor state;
      archive.read(generator_key("cpu", rank), state);
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        generator.set_state(state);
      }
      if (draws && archive.try_read(generator_key("draws", rank), state)) {
        std::lock_guard<std::mutex> lock(draws->mutex());
        draws->set_state(state);
      }
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' does not fit this model: {}", path, e.what_without_backtrace()));
  }
  return header;
}

nn::Model build_model(const Config& config, const data::DatasetInfo& data) {
  nn::ModelOptions options = config.model;
  options.transformer().vocab_size(data.vocab_size).grid(data.grid);
  options.num_classes(data.num_classes);
  if (options.kind() == nn::ModelKind::dual_encoder && data.fields != 2)
    throw std::invalid_argument(fmt::format("model.kind dual_encoder needs a dataset of pairs; '{}' has single sequences",
                                            data.task));
  const nn::PositionalOptions& p = options.transformer().positional();
  if (p.kind() == nn::PositionalKind::conv_spe && p.conv_ndim() == 2 && data.grid.size() != 2)
    throw std::invalid_argument(fmt::format("model.positional.conv_ndim 2 needs an image dataset (with a grid); '{}' has "
                                            "none",
                                            data.task));
  if (options.kind() != nn::ModelKind::dual_encoder && data.fields != 1)
    throw std::invalid_argument(
        fmt::format("the dataset '{}' holds pairs: set model.kind to dual_encoder", data.task));
  nn::Model model(options);
  if (config.train.dtype == Precision::float64) model->to(at::kDouble);
  return model;
}

SavedModel load_saved_model(const std::string& checkpoint) {
  const CheckpointHeader header = read_checkpoint_header(checkpoint);
  nn::Model model = build_model(header.config, header.data);
  load_checkpoint(checkpoint, *model, nullptr, &header.config);
  model->eval();
  return {header, model};
}

data::Dataset load_split_for(const CheckpointHeader& header, const std::string& split, const std::string& data_dir) {
  const std::string path = data::split_path(data_dir.empty() ? header.config.data.dir : data_dir, split);
  data::Dataset dataset = data::Dataset::load(path);
  const data::DatasetInfo& info = dataset.info();
  if (!data::same_model_inputs(info, header.data))
    throw std::runtime_error(fmt::format("'{}' is a {} dataset (vocabulary {}, {} classes); the checkpoint was trained "
                                         "on {} (vocabulary {}, {} classes)",
                                         path, info.task, info.vocab_size, info.num_classes, header.data.task,
                                         header.data.vocab_size, header.data.num_classes));
  return dataset;
}

}  // namespace spe::train
