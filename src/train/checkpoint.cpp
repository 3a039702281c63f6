#include "spe/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "spe/util/files.h"
#include "spe/util/hash.h"
#include "train/checkpoint_envelope.h"
#include "train/tensor_file.h"
#include "util/json_numbers.h"

namespace spe::train {
namespace {

constexpr char kMagic[8] = {'S', 'P', 'E', 'C', 'K', 'P', 'T', '\0'};
// 2: spe's tensor file (train/tensor_file.h); 1 (until 2026-12-03): LibTorch's TorchScript archive.
constexpr uint32_t kFormatVersion = 2;
constexpr size_t kPreamble = sizeof kMagic + 4 + 8 + 8;

const nlohmann::json& entry(const nlohmann::json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) throw std::runtime_error(fmt::format("it has no '{}'", key));
  return object.at(key);
}

// A count the checkpoint records under object[key]: one integer, at least `minimum`.
int64_t count_in(const nlohmann::json& object, const char* key, int64_t minimum = 0) {
  const int64_t value = json_integer(entry(object, key), fmt::format("'{}'", key));
  if (value < minimum) throw std::runtime_error(fmt::format("'{}' is {}, expected at least {}", key, value, minimum));
  return value;
}

at::Tensor text_tensor(const std::string& text) {
  at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  if (!text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  return bytes;
}

std::string text_in(const TensorFile& file, const std::string& name) {
  const at::Tensor bytes = file.tensor(name);
  if (bytes.scalar_type() != at::kByte || bytes.dim() != 1)
    throw std::runtime_error(fmt::format("'{}' is not text (a 1-D uint8 tensor)", name));
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

// The saved tensor `name`, which must have the shape and dtype of `like` (a parameter, or an
// optimizer state of one); on like's device.
at::Tensor tensor_like(const TensorFile& file, const std::string& name, const at::Tensor& like) {
  const at::Tensor saved = file.tensor(name);
  if (saved.sizes() != like.sizes() || saved.scalar_type() != like.scalar_type())
    throw std::runtime_error(fmt::format("'{}' is {} of shape [{}], the model's is {} of shape [{}]", name,
                                         c10::toString(saved.scalar_type()), fmt::join(saved.sizes(), ", "),
                                         c10::toString(like.scalar_type()), fmt::join(like.sizes(), ", ")));
  return saved.to(like.device());
}

CheckpointHeader read_header(const TensorFile& file, const std::string& path) {
  CheckpointHeader header;
  header.config = parse_config(text_in(file, "config"), {}, path + " (its configuration)");
  const nlohmann::json& d = entry(file.meta(), "data");
  header.data.task = entry(d, "task").get<std::string>();
  header.data.vocab_size = count_in(d, "vocab_size", 2);
  header.data.num_classes = count_in(d, "num_classes");
  header.data.fields = count_in(d, "fields", 1);
  const nlohmann::json& grid = entry(d, "grid");
  if (!grid.is_array()) throw std::runtime_error(fmt::format("'grid' is {}, expected a list", grid.dump()));
  for (const nlohmann::json& side : grid) header.data.grid.push_back(json_integer(side, "a side of 'grid'"));
  const nlohmann::json& s = entry(file.meta(), "state");
  TrainingState& state = header.state;
  state.step = count_in(s, "step");
  state.sampler.epoch = count_in(s, "epoch");
  state.sampler.offset = count_in(s, "offset");
  state.has_best = entry(s, "has_best").get<bool>();
  state.world_size = count_in(s, "world_size", 1);
  if (s.contains("trained_seconds")) {  // checkpoints before 2026-12-05 did not record it: 0
    const nlohmann::json& seconds = s.at("trained_seconds");
    if (!seconds.is_number() || !(seconds.get<double>() >= 0) || !std::isfinite(seconds.get<double>()))
      throw std::runtime_error(fmt::format("'trained_seconds' is {}, expected a finite number >= 0", seconds.dump()));
    state.trained_seconds = seconds.get<double>();
  }
  const at::Tensor best = file.tensor("state/best_metric");
  if (best.scalar_type() != at::kDouble || best.numel() != 1)
    throw std::runtime_error("'state/best_metric' is not one float64");
  state.best_metric = best.item<double>();
  return header;
}

// The checkpoint's payload and what it says about itself, every entry checked; errors name the file.
std::pair<TensorFile, CheckpointHeader> open_checkpoint(const std::string& path) {
  std::string payload = checkpoint_payload(read_file(path), path);
  try {
    TensorFile file(std::move(payload));
    CheckpointHeader header = read_header(file, path);
    return {std::move(file), std::move(header)};
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' is not what spe writes: {}", path, e.what()));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' is not what spe writes: {}", path, e.what()));
  }
}

// The key under which LibTorch's optimizers keep a parameter's state: the address of its
// TensorImpl, as a string in LibTorch 1.x, the pointer itself in later versions.
template <class Key>
Key state_key(const at::Tensor& parameter) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream address;
    address << parameter.unsafeGetTensorImpl();
    return address.str();
  } else {
    return parameter.unsafeGetTensorImpl();
  }
}
using StateKey = std::decay_t<decltype(std::declval<torch::optim::AdamW&>().state())>::key_type;

// AdamW's state of parameter i of group g: tensors "optimizer/g/i/exp_avg", ".../exp_avg_sq"
// (and ".../max_exp_avg_sq" with amsgrad), its step in meta["optimizer"][g][i] (null: no state yet).
nlohmann::json save_optimizer(torch::optim::AdamW& optimizer, NamedTensors& tensors) {
  nlohmann::json groups = nlohmann::json::array();
  for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
    const std::vector<at::Tensor>& params = optimizer.param_groups()[g].params();
    nlohmann::json steps = nlohmann::json::array();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto found = optimizer.state().find(state_key<StateKey>(params[i]));
      if (found == optimizer.state().end()) {
        steps.push_back(nullptr);
        continue;
      }
      const auto& state = static_cast<const torch::optim::AdamWParamState&>(*found->second);
      steps.push_back(state.step());
      const std::string prefix = fmt::format("optimizer/{}/{}/", g, i);
      tensors.emplace_back(prefix + "exp_avg", state.exp_avg());
      tensors.emplace_back(prefix + "exp_avg_sq", state.exp_avg_sq());
      if (state.max_exp_avg_sq().defined()) tensors.emplace_back(prefix + "max_exp_avg_sq", state.max_exp_avg_sq());
    }
    groups.push_back(steps);
  }
  return groups;
}

void load_optimizer(const TensorFile& file, torch::optim::AdamW& optimizer) {
  const nlohmann::json& groups = entry(file.meta(), "optimizer");
  std::vector<torch::optim::OptimizerParamGroup>& param_groups = optimizer.param_groups();
  if (!groups.is_array() || groups.size() != param_groups.size())
    throw std::runtime_error(fmt::format("its optimizer state is {}, expected a list of {} parameter groups",
                                         groups.dump().substr(0, 80), param_groups.size()));
  auto& states = optimizer.state();
  states.clear();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<at::Tensor>& params = param_groups[g].params();
    if (!groups[g].is_array() || groups[g].size() != params.size())
      throw std::runtime_error(fmt::format("its optimizer group {} is not a list of {} steps", g, params.size()));
    for (size_t i = 0; i < params.size(); ++i) {
      if (groups[g][i].is_null()) continue;
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      const std::string prefix = fmt::format("optimizer/{}/{}/", g, i);
      state->step(json_integer(groups[g][i], "an optimizer step"));
      state->exp_avg(tensor_like(file, prefix + "exp_avg", params[i]));
      state->exp_avg_sq(tensor_like(file, prefix + "exp_avg_sq", params[i]));
      if (file.contains(prefix + "max_exp_avg_sq")) state->max_exp_avg_sq(tensor_like(file, prefix + "max_exp_avg_sq", params[i]));
      states[state_key<StateKey>(params[i])] = std::move(state);
    }
  }
}

// Every parameter and buffer of the model from "model/<name>"; the file must hold exactly those.
void load_model(const TensorFile& file, nn::ModelImpl& model) {
  std::set<std::string> expected;
  at::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor& target) {
    expected.insert("model/" + name);
    target.copy_(tensor_like(file, "model/" + name, target));
  };
  for (auto& p : model.named_parameters()) load(p.key(), p.value());
  for (auto& b : model.named_buffers()) load(b.key(), b.value());
  for (const std::string& name : file.names_under("model/"))
    if (!expected.count(name)) throw std::runtime_error(fmt::format("it holds '{}', which this model lacks", name));
}

// "rng/cpu" and "rng/draws" for rank 0 (and single-process runs), "rng/cpu/rank1", ... for the others.
std::string generator_key(const char* stream, int64_t rank) {
  return rank == 0 ? fmt::format("rng/{}", stream) : fmt::format("rng/{}/rank{}", stream, rank);
}

void restore_generator(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

}  // namespace

std::string checkpoint_envelope(const std::string& payload) {
  std::string out(kMagic, sizeof kMagic);
  const uint32_t version = kFormatVersion;
  const uint64_t length = payload.size(), checksum = fnv1a(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(&version), 4);
  out.append(reinterpret_cast<const char*>(&length), 8);
  out.append(reinterpret_cast<const char*>(&checksum), 8);
  return out + payload;
}

std::string checkpoint_payload(const std::string& bytes, const std::string& path) {
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
                                         version > kFormatVersion ? " (it was written by a newer spe)"
                                                                  : " (it was written by an older spe: train again, or load it "
                                                                    "with the spe that wrote it)"));
  if (length != bytes.size() - kPreamble)
    throw std::runtime_error(fmt::format("checkpoint '{}' is {}: its payload should be {} bytes, the file holds {}",
                                         path, length > bytes.size() - kPreamble ? "truncated" : "followed by extra bytes",
                                         length, bytes.size() - kPreamble));
  if (fnv1a(bytes.data() + kPreamble, length) != checksum)
    throw std::runtime_error(fmt::format("checkpoint '{}' is corrupt: its checksum does not match its contents", path));
  return bytes.substr(kPreamble);
}

void save_checkpoint(const std::string& path, const CheckpointHeader& header, nn::ModelImpl& model,
                     torch::optim::AdamW* optimizer, const std::vector<RankGenerators>& ranks) {
  const data::DatasetInfo& d = header.data;
  const TrainingState& s = header.state;
  nlohmann::json meta = {
      {"data", {{"task", d.task}, {"vocab_size", d.vocab_size}, {"num_classes", d.num_classes}, {"fields", d.fields},
                {"grid", d.grid}}},
      {"state", {{"step", s.step}, {"epoch", s.sampler.epoch}, {"offset", s.sampler.offset}, {"has_best", s.has_best},
                 {"world_size", s.world_size}, {"trained_seconds", s.trained_seconds}}}};
  // The configuration as its YAML bytes (any bytes a user wrote, which JSON strings cannot hold).
  NamedTensors tensors{{"config", text_tensor(to_yaml(header.config))},
                       {"state/best_metric", at::full({1}, s.best_metric, at::kDouble)}};
  for (const auto& p : model.named_parameters()) tensors.emplace_back("model/" + p.key(), p.value());
  for (const auto& b : model.named_buffers()) tensors.emplace_back("model/" + b.key(), b.value());
  if (optimizer) {
    meta["optimizer"] = save_optimizer(*optimizer, tensors);
    for (size_t rank = 0; rank < ranks.size(); ++rank) {
      tensors.emplace_back(generator_key("cpu", static_cast<int64_t>(rank)), ranks[rank].global);
      if (ranks[rank].draws.defined()) tensors.emplace_back(generator_key("draws", static_cast<int64_t>(rank)), ranks[rank].draws);
    }
  }
  write_file_atomically(path, checkpoint_envelope(encode_tensor_file(meta, tensors)));
}

CheckpointHeader read_checkpoint_header(const std::string& path) { return open_checkpoint(path).second; }

CheckpointHeader load_checkpoint(const std::string& path, nn::ModelImpl& model, torch::optim::AdamW* optimizer,
                                 const Config* expected, int64_t rank, at::Generator* draws) {
  const auto [file, header] = open_checkpoint(path);
  if (expected && model_yaml(*expected) != model_yaml(header.config))
    throw std::runtime_error(fmt::format(
        "checkpoint '{}' holds another model than the configuration describes.\ncheckpoint:\n{}\nconfiguration:\n{}",
        path, model_yaml(header.config), model_yaml(*expected)));
  try {
    load_model(file, model);
    if (optimizer) {
      load_optimizer(file, *optimizer);
      at::Generator global = at::detail::getDefaultCPUGenerator();
      restore_generator(global, file.tensor(generator_key("cpu", rank)));
      if (draws && file.contains(generator_key("draws", rank))) restore_generator(*draws, file.tensor(generator_key("draws", rank)));
    }
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' does not fit this model: {}", path, e.what()));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' does not fit this model: {}", path, e.what()));
  } catch (const c10::Error& e) {
    throw std::runtime_error(fmt::format("checkpoint '{}' does not fit this model: {}", path, e.what_without_backtrace()));
  }
  return header;
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
