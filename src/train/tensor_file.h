#pragma once
// Named tensors with a JSON description, in one byte string: the payload of spe's checkpoints.
// spe reads it with its own code, every length, shape and name checked before use, instead of
// LibTorch's TorchScript archive reader, which crashes on crafted files (docs/FUZZING.md).
//
// Layout, little-endian: u64 header length; the header, JSON
//   {"meta": {...}, "tensors": [{"name": "model/w", "dtype": "float32", "shape": [2, 3]}, ...]};
// then the tensors' bytes, row-major, one after another in the order of the list, and nothing
// after them.
#include <ATen/core/Tensor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace spe::train {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// meta: a JSON object; tensors: float16/32/64, bfloat16, int8/16/32/64 or uint8 (others are refused), on any device;
// names unique.
std::string encode_tensor_file(const nlohmann::json& meta, const NamedTensors& tensors);

class TensorFile {
 public:
  // Checks the whole layout; a damaged or foreign one throws std::runtime_error saying what is wrong.
  explicit TensorFile(std::string bytes);

  const nlohmann::json& meta() const { return meta_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // A CPU copy of the named tensor; throws std::runtime_error when the file has none.
  at::Tensor tensor(const std::string& name) const;
  // The names that start with prefix, in order.
  std::vector<std::string> names_under(const std::string& prefix) const;

 private:
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t offset, bytes;  // within bytes_
  };
  std::string bytes_;
  nlohmann::json meta_;
  std::map<std::string, Entry> entries_;
};

}  // namespace spe::train
