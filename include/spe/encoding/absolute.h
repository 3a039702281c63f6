#pragma once
// Absolute positional encodings, added to the token embeddings before the first layer.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace spe {

// The sinusoidal table of Vaswani et al.: pe[n, 2i] = sin(n w_i), pe[n, 2i+1] = cos(n w_i),
// w_i = base^(-2i / E). No parameters.
struct SinusoidalEncodingOptions {
  explicit SinusoidalEncodingOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);          // E
  TORCH_ARG(double, base) = 10000.0;
};

class SinusoidalEncodingImpl : public torch::nn::Cloneable<SinusoidalEncodingImpl> {
 public:
  explicit SinusoidalEncodingImpl(const SinusoidalEncodingOptions& options);
  explicit SinusoidalEncodingImpl(int64_t dim) : SinusoidalEncodingImpl(SinusoidalEncodingOptions(dim)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override;

  // The table for positions start .. start+length-1: (length, E), in `options`' dtype/device.
  at::Tensor table(int64_t length, int64_t start, const at::TensorOptions& tensor_options) const;
  // x: (B, N, E) -> x + table for positions start .. start+N-1.
  at::Tensor forward(const at::Tensor& x, int64_t start = 0);

  SinusoidalEncodingOptions options;
};
TORCH_MODULE(SinusoidalEncoding);

// A learned table of max_length rows, initialised N(0, 0.02^2).
struct LearnedEncodingOptions {
  LearnedEncodingOptions(int64_t max_length, int64_t dim) : max_length_(max_length), dim_(dim) {}
  TORCH_ARG(int64_t, max_length);
  TORCH_ARG(int64_t, dim);
};

class LearnedEncodingImpl : public torch::nn::Cloneable<LearnedEncodingImpl> {
 public:
  explicit LearnedEncodingImpl(const LearnedEncodingOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // x: (B, N, E) -> x + weight[start .. start+N-1]; positions past max_length are an error.
  at::Tensor forward(const at::Tensor& x, int64_t start = 0);

  LearnedEncodingOptions options;
  at::Tensor weight;  // (max_length, E)
};
TORCH_MODULE(LearnedEncoding);

}  // namespace spe
