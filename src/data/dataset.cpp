#include "spe/data/dataset.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "spe/util/files.h"
#include "spe/util/hash.h"
#include "util/json_numbers.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the dataset format is little-endian");

namespace spe::data {
namespace {

constexpr char kMagic[8] = {'S', 'P', 'E', 'D', 'A', 'T', 'A', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kMaxHeaderBytes = 1 << 20;
constexpr int64_t kMaxGridCells = int64_t{1} << 31;  // positions of one sequence, for 2-D convSPE

template <class T>
void append(std::string& out, const T* values, size_t count) {
  out.append(reinterpret_cast<const char*>(values), count * sizeof(T));
}

void check_info(const DatasetInfo& info, const std::string& name) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(fmt::format("dataset '{}': {}", name, what));
  };
  if (info.vocab_size < 2 || info.vocab_size > 65536)
    fail(fmt::format("vocab_size is {}, expected 2 to 65536 (token 0 is padding)", info.vocab_size));
  if (info.num_classes < 0) fail(fmt::format("num_classes is {}, expected >= 0", info.num_classes));
  if (info.fields != 1 && info.fields != 2) fail(fmt::format("fields is {}, expected 1 or 2 (pairs)", info.fields));
  if (!info.class_names.empty() && static_cast<int64_t>(info.class_names.size()) != info.num_classes)
    fail(fmt::format("{} class names for {} classes", info.class_names.size(), info.num_classes));
  int64_t cells = 1;
  for (int64_t side : info.grid) {
    if (side <= 0) fail(fmt::format("grid side {} is not positive", side));
    if (__builtin_mul_overflow(cells, side, &cells) || cells > kMaxGridCells)
      fail(fmt::format("the grid has more than {} cells", kMaxGridCells));
  }
}

// Reads consecutive little-endian values out of a byte string, refusing to run past its end.
class Reader {
 public:
  Reader(const std::string& bytes, const std::string& name) : bytes_(bytes), name_(name) {}
  size_t remaining() const { return bytes_.size() - position_; }
  size_t position() const { return position_; }
  template <class T>
  void read(T* out, uint64_t count, const char* what) {
    if (count > remaining() / sizeof(T))
      throw std::runtime_error(fmt::format("dataset '{}' is truncated: {} needs {} bytes at offset {}, only {} remain",
                                           name_, what, count * sizeof(T), position_, remaining()));
    if (count == 0) return;  // out may be the null data() of an empty vector
    std::memcpy(out, bytes_.data() + position_, count * sizeof(T));
    position_ += count * sizeof(T);
  }

 private:
  const std::string& bytes_;
  const std::string& name_;
  size_t position_ = 0;
};

}  // namespace

bool same_model_inputs(const DatasetInfo& a, const DatasetInfo& b) {
  return a.vocab_size == b.vocab_size && a.num_classes == b.num_classes && a.fields == b.fields && a.grid == b.grid;
}

Dataset::Dataset(DatasetInfo info) : info_(std::move(info)), starts_{0} { check_info(info_, info_.task); }

void Dataset::add(int32_t label, const std::vector<std::vector<uint16_t>>& sequences) {
  if (static_cast<int64_t>(sequences.size()) != info_.fields)
    throw std::invalid_argument(
        fmt::format("Dataset::add: {} sequences given, the dataset has {} per example", sequences.size(), info_.fields));
  if (label < 0 || (info_.num_classes > 0 && label >= info_.num_classes) || (info_.num_classes == 0 && label != 0))
    throw std::invalid_argument(fmt::format("Dataset::add: label {} outside [0, {})", label, std::max<int64_t>(info_.num_classes, 1)));
  for (const auto& sequence : sequences)
    for (uint16_t token : sequence)
      if (token >= info_.vocab_size)
        throw std::invalid_argument(fmt::format("Dataset::add: token {} outside the vocabulary [0, {})", token, info_.vocab_size));
  labels_.push_back(label);
  for (const auto& sequence : sequences) {
    tokens_.insert(tokens_.end(), sequence.begin(), sequence.end());
    starts_.push_back(tokens_.size());
  }
}

TokenSpan Dataset::sequence(int64_t example, int64_t field) const {
  if (example < 0 || example >= size() || field < 0 || field >= info_.fields)
    throw std::out_of_range(fmt::format("Dataset::sequence({}, {}): the dataset has {} examples of {} fields", example,
                                        field, size(), info_.fields));
  const size_t index = static_cast<size_t>(example * info_.fields + field);
  return {tokens_.data() + starts_[index], static_cast<size_t>(starts_[index + 1] - starts_[index])};
}

std::string Dataset::serialize() const {
  const nlohmann::json header = {
      {"task", info_.task},         {"split", info_.split},   {"vocab_size", info_.vocab_size},
      {"num_classes", info_.num_classes}, {"fields", info_.fields}, {"grid", info_.grid},
      {"class_names", info_.class_names}, {"source", info_.source}, {"examples", size()}};
  const std::string header_text = header.dump();
  std::string out(kMagic, sizeof kMagic);
  const uint32_t version = kFormatVersion, header_length = static_cast<uint32_t>(header_text.size());
  append(out, &version, 1);
  append(out, &header_length, 1);
  out += header_text;
  append(out, labels_.data(), labels_.size());
  std::vector<uint32_t> lengths(starts_.size() - 1);
  for (size_t i = 0; i + 1 < starts_.size(); ++i) lengths[i] = static_cast<uint32_t>(starts_[i + 1] - starts_[i]);
  append(out, lengths.data(), lengths.size());
  append(out, tokens_.data(), tokens_.size());
  const uint64_t checksum = fnv1a(out.data(), out.size());
  append(out, &checksum, 1);
  return out;
}

Dataset Dataset::deserialize(const std::string& bytes, const std::string& name) {
  Reader in(bytes, name);
  char magic[sizeof kMagic];
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw std::runtime_error(fmt::format("'{}' is not an spe dataset (it does not start with SPEDATA); "
                                         "make one with `spe data <task>`",
                                         name));
  in.read(magic, sizeof magic, "the magic");
  uint32_t version = 0, header_length = 0;
  in.read(&version, 1, "the format version");
  if (version != kFormatVersion)
    throw std::runtime_error(fmt::format("dataset '{}' has format version {}; this spe reads version {}{}", name, version,
                                         kFormatVersion, version > kFormatVersion ? " (it was written by a newer spe)" : ""));
  in.read(&header_length, 1, "the header length");
  if (header_length > kMaxHeaderBytes)
    throw std::runtime_error(fmt::format("dataset '{}': header length {} exceeds {} bytes (corrupt file?)", name,
                                         header_length, kMaxHeaderBytes));
  std::string header_text(header_length, '\0');
  in.read(header_text.data(), header_length, "the header");
  DatasetInfo info;
  int64_t examples = 0;
  try {
    const nlohmann::json header = nlohmann::json::parse(header_text);
    info.task = header.at("task").get<std::string>();
    info.split = header.at("split").get<std::string>();
    auto integer = [&](const nlohmann::json& value, const char* key) {
      return json_integer(value, fmt::format("dataset '{}': the header's {}", name, key));
    };
    info.vocab_size = integer(header.at("vocab_size"), "vocab_size");
    info.num_classes = integer(header.at("num_classes"), "num_classes");
    info.fields = integer(header.at("fields"), "fields");
    for (const auto& side : header.at("grid")) info.grid.push_back(integer(side, "grid"));
    info.class_names = header.at("class_names").get<std::vector<std::string>>();
    info.source = header.at("source").get<std::string>();
    examples = integer(header.at("examples"), "examples");
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("dataset '{}': the header is damaged ({})", name, e.what()));
  }
  check_info(info, name);
  if (examples < 0 || static_cast<uint64_t>(examples) > in.remaining() / 4)
    throw std::runtime_error(fmt::format("dataset '{}': {} examples cannot fit in the {} bytes left (truncated or corrupt)",
                                         name, examples, in.remaining()));
  Dataset dataset(info);
  dataset.labels_.resize(static_cast<size_t>(examples));
  in.read(dataset.labels_.data(), dataset.labels_.size(), "the labels");
  std::vector<uint32_t> lengths(static_cast<size_t>(examples * info.fields));
  in.read(lengths.data(), lengths.size(), "the sequence lengths");
  dataset.starts_.resize(lengths.size() + 1);
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] > in.remaining() / 2)
      throw std::runtime_error(fmt::format("dataset '{}': sequence {} claims {} tokens, more than the file holds "
                                           "(truncated or corrupt)",
                                           name, i, lengths[i]));
    dataset.starts_[i + 1] = dataset.starts_[i] + lengths[i];
  }
  const uint64_t total = dataset.starts_.back();
  if (total > in.remaining() / 2)
    throw std::runtime_error(fmt::format("dataset '{}' is truncated: {} tokens expected, room for {}", name, total,
                                         in.remaining() / 2));
  dataset.tokens_.resize(total);
  in.read(dataset.tokens_.data(), total, "the tokens");
  const size_t checked = in.position();
  uint64_t checksum = 0;
  in.read(&checksum, 1, "the checksum");
  if (in.remaining() != 0)
    throw std::runtime_error(fmt::format("dataset '{}' has {} unexpected bytes after its end", name, in.remaining()));
  if (checksum != fnv1a(bytes.data(), checked))
    throw std::runtime_error(fmt::format("dataset '{}' is corrupt: its checksum does not match its contents", name));
  for (int32_t label : dataset.labels_)
    if (label < 0 || label >= std::max<int64_t>(info.num_classes, 1))
      throw std::runtime_error(fmt::format("dataset '{}': label {} outside [0, {})", name, label, info.num_classes));
  for (uint16_t token : dataset.tokens_)
    if (token >= info.vocab_size)
      throw std::runtime_error(fmt::format("dataset '{}': token {} outside the vocabulary [0, {})", name, token, info.vocab_size));
  return dataset;
}

void Dataset::save(const std::string& path) const { write_file_atomically(path, serialize()); }

Dataset Dataset::load(const std::string& path) { return deserialize(read_file(path), path); }

std::string split_path(const std::string& dir, const std::string& split) { return dir + "/" + split + ".bin"; }

}  // namespace spe::data
