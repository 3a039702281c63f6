#pragma once
// Rotary positional encoding (RoPE, Su et al.): rotates each pair (x_2i, x_2i+1) of a query or
// key at position n by the angle n * base^(-2i / D), so that q_m . k_n depends on m - n only.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace spe {

struct RotaryEncodingOptions {
  explicit RotaryEncodingOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);  // D, features per head; must be even
  TORCH_ARG(double, base) = 10000.0;
};

class RotaryEncodingImpl : public torch::nn::Cloneable<RotaryEncodingImpl> {
 public:
  explicit RotaryEncodingImpl(const RotaryEncodingOptions& options);
  explicit RotaryEncodingImpl(int64_t dim) : RotaryEncodingImpl(RotaryEncodingOptions(dim)) {}
  void reset() override {}
  void pretty_print(std::ostream& stream) const override;

  // x: (B, N, H, D) at positions start .. start+N-1 -> rotated x, same shape.
  at::Tensor forward(const at::Tensor& x, int64_t start = 0);
  // x: (B, N, H, D) at the given positions (N,) -> rotated x.
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& positions) const;

  RotaryEncodingOptions options;
};
TORCH_MODULE(RotaryEncoding);

}  // namespace spe
