#pragma once
// Rotary positional encoding (RoPE, Su et al.): rotates each pair (x_2i, x_2i+1) of a query or
// key at position n by the angle n theta_i, theta_i = base^(-2i / D), so that q_m . k_n depends
// on m - n only.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "spe/util/choices.h"

namespace spe {

// Length scaling, to evaluate beyond the training length L with s = factor >= 1 (every kind
// keeps q_m . k_n a function of m - n):
//   linear: position interpolation (Chen et al. 2023): theta_i / s, positions squeezed into L
//   ntk:    NTK-aware: base s^(D / (D - 2)) for base: the highest frequency kept, the lowest / s
//   yarn:   YaRN (Peng et al. 2023): pair i with r_i = L theta_i / (2 pi) periods within L gets
//           (1 - g_i) theta_i / s + g_i theta_i, g_i = clamp((r_i - 1) / (32 - 1), 0, 1), and
//           q, k are scaled by 0.1 ln s + 1 (the attention temperature); needs original_length L
enum class RotaryScaling { none, linear, ntk, yarn };
inline constexpr Choice<RotaryScaling> kRotaryScalings[] = {{"none", RotaryScaling::none},
                                                            {"linear", RotaryScaling::linear},
                                                            {"ntk", RotaryScaling::ntk},
                                                            {"yarn", RotaryScaling::yarn}};

struct RotaryEncodingOptions {
  explicit RotaryEncodingOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);  // D, features per head; must be even
  TORCH_ARG(double, base) = 10000.0;
  TORCH_ARG(RotaryScaling, scaling) = RotaryScaling::none;
  TORCH_ARG(double, factor) = 1.0;          // s: the evaluated length over the trained one
  TORCH_ARG(int64_t, original_length) = 0;  // L, the training length (yarn)
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
  // theta_i after the scaling: (D / 2,) float64.
  at::Tensor frequencies() const;
  // Changes the length scaling (e.g. of a trained model, before evaluating longer sequences);
  // throws std::invalid_argument on a factor < 1 or yarn without original_length.
  void set_scaling(RotaryScaling scaling, double factor, int64_t original_length = 0);

  RotaryEncodingOptions options;
};
TORCH_MODULE(RotaryEncoding);

}  // namespace spe
