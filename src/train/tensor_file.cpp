#include "train/tensor_file.h"

#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>

#include "util/json_numbers.h"

namespace spe::train {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 26;  // a configuration and a list of names: far less
constexpr size_t kMaxDims = 16;

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {{at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kHalf, "float16"},
                                 {at::kBFloat16, "bfloat16"}, {at::kChar, "int8"}, {at::kShort, "int16"},
                                 {at::kInt, "int32"}, {at::kLong, "int64"}, {at::kByte, "uint8"}};

const char* name_of(at::ScalarType type) {
  for (const DtypeName& d : kDtypes)
    if (d.type == type) return d.name;
  throw std::invalid_argument(fmt::format("a tensor file holds no {} tensors", c10::toString(type)));
}

at::ScalarType dtype_named(const std::string& name, const std::string& tensor) {
  for (const DtypeName& d : kDtypes)
    if (name == d.name) return d.type;
  throw std::runtime_error(fmt::format("tensor '{}' has dtype '{}', which spe does not write", tensor, name));
}

// The bytes a tensor of this shape takes, refusing shapes whose element count overflows.
uint64_t byte_size(const std::vector<int64_t>& shape, size_t element_size, const std::string& tensor) {
  uint64_t nonzero_product = 1;
  bool empty = false;
  for (int64_t side : shape) {
    empty = empty || side == 0;
    const uint64_t factor = side == 0 ? 1 : static_cast<uint64_t>(side);
    if (__builtin_mul_overflow(nonzero_product, factor, &nonzero_product) ||
        nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / element_size)
      throw std::runtime_error(fmt::format("tensor '{}' has a shape too large for any file", tensor));
  }
  return empty ? 0 : nonzero_product * element_size;
}

}  // namespace

std::string encode_tensor_file(const nlohmann::json& meta, const NamedTensors& tensors) {
  if (!meta.is_object()) throw std::invalid_argument(fmt::format("encode_tensor_file: meta is {}, expected an object", meta.dump()));
  nlohmann::json list = nlohmann::json::array();
  std::vector<at::Tensor> contiguous;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    if (!names.insert(name).second) throw std::invalid_argument(fmt::format("encode_tensor_file: '{}' given twice", name));
    list.push_back({{"name", name}, {"dtype", name_of(tensor.scalar_type())}, {"shape", tensor.sizes().vec()}});
    contiguous.push_back(tensor.detach().to(at::kCPU).contiguous());
  }
  const std::string header = nlohmann::json{{"meta", meta}, {"tensors", list}}.dump();
  const uint64_t length = header.size();
  std::string out(reinterpret_cast<const char*>(&length), sizeof length);
  out += header;
  for (const at::Tensor& t : contiguous) out.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
  return out;
}

TensorFile::TensorFile(std::string bytes) : bytes_(std::move(bytes)) {
  uint64_t header_length = 0;
  if (bytes_.size() < sizeof header_length) throw std::runtime_error("it ends before its header's length");
  std::memcpy(&header_length, bytes_.data(), sizeof header_length);
  if (header_length > bytes_.size() - sizeof header_length || header_length > kMaxHeaderBytes)
    throw std::runtime_error(fmt::format("its header length {} exceeds the {} bytes that follow", header_length,
                                         bytes_.size() - sizeof header_length));
  size_t offset = sizeof header_length + header_length;
  try {
    const nlohmann::json header = nlohmann::json::parse(bytes_.begin() + sizeof header_length, bytes_.begin() + offset);
    meta_ = header.at("meta");
    const nlohmann::json& tensors = header.at("tensors");
    if (!meta_.is_object() || !tensors.is_array())
      throw std::runtime_error("its header is not {\"meta\": {...}, \"tensors\": [...]}");
    for (const nlohmann::json& item : tensors) {
      const std::string name = item.at("name").get<std::string>();
      Entry entry{dtype_named(item.at("dtype").get<std::string>(), name), {}, offset, 0};
      const nlohmann::json& shape = item.at("shape");
      if (!shape.is_array() || shape.size() > kMaxDims)
        throw std::runtime_error(fmt::format("tensor '{}' has shape {}, expected a list of at most {} sizes", name,
                                             shape.dump(), kMaxDims));
      for (const nlohmann::json& side : shape) {
        entry.shape.push_back(json_integer(side, fmt::format("a size of tensor '{}'", name)));
        if (entry.shape.back() < 0) throw std::runtime_error(fmt::format("tensor '{}' has shape {}", name, shape.dump()));
      }
      entry.bytes = byte_size(entry.shape, c10::elementSize(entry.dtype), name);
      if (entry.bytes > bytes_.size() - offset)
        throw std::runtime_error(fmt::format("tensor '{}' ({} bytes) runs past the end ({} bytes left)", name,
                                             entry.bytes, bytes_.size() - offset));
      offset += entry.bytes;
      if (!entries_.emplace(name, std::move(entry)).second)
        throw std::runtime_error(fmt::format("it holds tensor '{}' twice", name));
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("its header is damaged ({})", e.what()));
  }
  if (offset != bytes_.size())
    throw std::runtime_error(fmt::format("{} bytes follow its last tensor", bytes_.size() - offset));
}

at::Tensor TensorFile::tensor(const std::string& name) const {
  const auto found = entries_.find(name);
  if (found == entries_.end()) throw std::runtime_error(fmt::format("it holds no tensor '{}'", name));
  const Entry& entry = found->second;
  at::Tensor tensor = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  if (entry.bytes > 0) std::memcpy(tensor.data_ptr(), bytes_.data() + entry.offset, entry.bytes);
  return tensor;
}

std::vector<std::string> TensorFile::names_under(const std::string& prefix) const {
  std::vector<std::string> names;
  for (auto it = entries_.lower_bound(prefix); it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    names.push_back(it->first);
  return names;
}

}  // namespace spe::train
