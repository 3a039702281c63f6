// The tensor file under checkpoints: every dtype and shape round-trips bit for bit, and a file
// whose layout is damaged or crafted is refused with what is wrong, before any tensor is made.
#include "train/tensor_file.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>

#include "support/errors.h"

namespace spe::train {
namespace {

// A tensor file with the given header text and data bytes.
std::string file_with(const std::string& header, const std::string& data) {
  const uint64_t length = header.size();
  return std::string(reinterpret_cast<const char*>(&length), 8) + header + data;
}

TEST(TensorFile, RoundTripsEveryDtypeAndShape) {
  at::manual_seed(3);
  const NamedTensors tensors{
      {"f32", at::randn({3, 4})},
      {"f64", at::randn({2, 1, 5}, at::kDouble)},
      {"f16", at::randn({7}).to(at::kHalf)},
      {"bf16", at::randn({2, 2}).to(at::kBFloat16)},
      {"i8", at::randint(-128, 127, {9}, at::kChar)},
      {"i16", at::randint(-30000, 30000, {4}, at::kShort)},
      {"i32", at::randint(-100000, 100000, {3, 3}, at::kInt)},
      {"i64", at::tensor(std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 0, 42})},
      {"u8", at::randint(0, 255, {11}, at::kByte)},
      {"scalar", at::full({}, 2.5)},
      {"empty", at::empty({0, 3})},
      {"transposed", at::randn({4, 6}).t()},  // not contiguous: written row-major
  };
  const nlohmann::json meta = {{"answer", 42}, {"nested", {{"list", {1, 2}}}}};
  const TensorFile file(encode_tensor_file(meta, tensors));
  EXPECT_EQ(file.meta(), meta);
  for (const auto& [name, tensor] : tensors) {
    ASSERT_TRUE(file.contains(name)) << name;
    const at::Tensor read = file.tensor(name);
    EXPECT_EQ(read.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(read.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(at::equal(read, tensor)) << name;
  }
  EXPECT_FALSE(file.contains("absent"));
  EXPECT_ERROR_CONTAINS(file.tensor("absent"), "it holds no tensor 'absent'");
}

TEST(TensorFile, ListsNamesUnderAPrefix) {
  const TensorFile file(encode_tensor_file(
      nlohmann::json::object(), {{"model/a", at::zeros({1})}, {"modelx", at::zeros({1})}, {"model/b/c", at::zeros({1})}, {"rng", at::zeros({1})}}));
  EXPECT_EQ(file.names_under("model/"), (std::vector<std::string>{"model/a", "model/b/c"}));
  EXPECT_TRUE(file.names_under("optimizer/").empty());
}

TEST(TensorFile, RefusesWhatItCannotWrite) {
  const nlohmann::json meta = nlohmann::json::object();
  EXPECT_ERROR_CONTAINS(encode_tensor_file(meta, {{"x", at::zeros({1})}, {"x", at::zeros({2})}}), "'x' given twice");
  EXPECT_ERROR_CONTAINS(encode_tensor_file(meta, {{"b", at::zeros({1}, at::kBool)}}), "holds no Bool tensors");
  EXPECT_ERROR_CONTAINS(encode_tensor_file({1, 2}, {}), "meta is [1,2], expected an object");
}

TEST(TensorFile, RefusesDamagedLayouts) {
  const std::string eight_floats(32, '\0');
  const std::string good = R"({"meta": {}, "tensors": [{"name": "w", "dtype": "float32", "shape": [2, 4]}]})";
  EXPECT_NO_THROW(TensorFile{file_with(good, eight_floats)});
  const std::vector<std::pair<std::string, std::string>> cases{
      {"", "ends before its header's length"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8), "header length 18446744073709551615 exceeds"},
      {file_with(good, eight_floats).substr(0, 20), "exceeds the 12 bytes that follow"},
      {file_with(good, eight_floats + "x"), "1 bytes follow its last tensor"},
      {file_with(good, eight_floats.substr(1)), "tensor 'w' (32 bytes) runs past the end (31 bytes left)"},
      {file_with("{\"meta\": {}, \"tensors\": [", ""), "its header is damaged"},
      {file_with(R"({"meta": [], "tensors": []})", ""), "its header is not"},
      {file_with(R"({"meta": {}, "tensors": {}})", ""), "its header is not"},
      {file_with(R"({"meta": {}})", ""), "its header is damaged"},
      {file_with(R"({"meta": {}, "tensors": [3]})", ""), "its header is damaged"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "complex", "shape": []}]})", ""),
       "tensor 'w' has dtype 'complex', which spe does not write"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "uint8", "shape": [-1]}]})", ""),
       "tensor 'w' has shape [-1]"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "uint8", "shape": [1.5]}]})", ""),
       "a size of tensor 'w' is 1.5, expected an integer"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "uint8", "shape": 4}]})", ""),
       "tensor 'w' has shape 4, expected a list"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "float64", "shape": [4294967296, 4294967296]}]})", ""),
       "tensor 'w' has a shape too large"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "float64", "shape": [0, 4294967296, 4294967296]}]})", ""),
       "tensor 'w' has a shape too large"},
      {file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "uint8", "shape": [1]},
                                            {"name": "w", "dtype": "uint8", "shape": [1]}]})",
                 "ab"),
       "it holds tensor 'w' twice"},
  };
  for (const auto& [bytes, expected] : cases) {
    SCOPED_TRACE(bytes);
    EXPECT_ERROR_CONTAINS(TensorFile{bytes}, expected);
  }
}

TEST(TensorFile, EmptyTensorsWithHugeSidesTakeNoBytes) {
  const TensorFile file(file_with(R"({"meta": {}, "tensors": [{"name": "w", "dtype": "float32", "shape": [0, 1000000000]}]})", ""));
  EXPECT_EQ(file.tensor("w").numel(), 0);
}

}  // namespace
}  // namespace spe::train
