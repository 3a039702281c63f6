#pragma once
// Applies an SPE code to queries and keys: qhat = sum_d q_d Qbar_d, khat = sum_d k_d Kbar_d,
// optionally with the gate that mixes the positional kernel with a position-free constant.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <utility>

#include "spe/encoding/spe_code.h"
#include "spe/random.h"

namespace spe {

struct SPEFilterOptions {
  SPEFilterOptions(int64_t heads, int64_t dim) : heads_(heads), dim_(dim) {}
  TORCH_ARG(int64_t, heads);
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(bool, gated) = true;
  // The gate's raw parameters start at N(gate_mean, 1); s = sigmoid(gate) is each feature's share of
  // the position-free constant: 0 (the reference's) starts at s about 0.5, -3 at about 0.05.
  TORCH_ARG(double, gate_mean) = 0.0;
  TORCH_ARG(SPENoise, noise) = SPENoise::gaussian;  // the gate noise's draw (spe_code.h)
};

class SPEFilterImpl : public torch::nn::Cloneable<SPEFilterImpl> {
 public:
  explicit SPEFilterImpl(const SPEFilterOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // q, k: (B, N, H, D) with N <= code length -> (qhat, khat): (B, N, H, R).
  // When gated, draws the gate noise from `generator` (one draw shared by all positions).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k,
                                            const SPECode& code,
                                            OptionalGenerator generator = c10::nullopt);
  // The filtering alone, with a code that already went through the gate (gated_code); q and k
  // hold the code's rows first_row .. first_row + N - 1 (decoding reads one row at a time).
  // Decoding a factored code may pass the parts made before (spe_code.h): the row's
  // step_coefficients (2, H, D, 2K + 1) and the gated code's step_rows (H, D, 2K + 1, R); where
  // the fused filter runs, the one-position op then reads them instead of rebuilding both.
  std::pair<at::Tensor, at::Tensor> filter(const at::Tensor& q, const at::Tensor& k, const SPECode& gated,
                                           int64_t first_row = 0, const at::Tensor& step_coefficients = {},
                                           const at::Tensor& step_rows = {}) const;
  // The gate's noise for one code: eps ~ N(0, 1) (H, D, R) / (D R)^(1/4), the same for every
  // position. Undefined when not gated.
  at::Tensor sample_gate_noise(int64_t realizations, at::ScalarType dtype,
                               OptionalGenerator generator = c10::nullopt) const;
  // The gated code: Qbar' = sqrt(1 - s) Qbar + sqrt(s) eps, same for Kbar, s = sigmoid(gate).
  // Returns the code unchanged when not gated.
  SPECode gated_code(const SPECode& code, const at::Tensor& gate_noise) const;
  // The gate's noise for this code: the code's own (SPECode::gate_noise, drawn with it) scaled as
  // sample_gate_noise's, else a fresh draw. Undefined when not gated.
  at::Tensor gate_noise_for(const SPECode& code, OptionalGenerator generator = c10::nullopt) const;
  // gated_code with the noise of gate_noise_for.
  SPECode apply_gate(const SPECode& code, OptionalGenerator generator = c10::nullopt) const;
  // The gate on exact (noise-free) features: x (B, N, H, D), features (B, N, H, D, J) whose
  // products give P_d(m - n) -> (B, N, H, D J) ungated, or (B, N, H, D (J + 1)) gated:
  // [sqrt(1 - s_d) features_d, sqrt(s_d) x_d] per d, whose products give (1 - s) P + s.
  at::Tensor gate_features(const at::Tensor& x, const at::Tensor& features) const;
  // The same gate on what multiplies x in such features: coefficients (N, H, D, J) -> (N, H, D, J)
  // ungated, (N, H, D, J + 1) gated: [sqrt(1 - s_d) coefficients_d, sqrt(s_d)] per d, so that
  // x.unsqueeze(-1) times it, flattened, is gate_features(x, x.unsqueeze(-1) * coefficients)
  // with one product over the batch instead of three (SineSPEImpl::exact_coefficients).
  at::Tensor gate_coefficients(const at::Tensor& coefficients) const;
  // The expected kernel after the gate, given the ungated one (H, D, lags...) for R realizations:
  // (1 - s) P + s sqrt(R / D). Unchanged when not gated.
  at::Tensor expected_kernel(const at::Tensor& ungated, int64_t realizations) const;

  SPEFilterOptions options;
  at::Tensor gate;  // (H, D), only when gated
};
TORCH_MODULE(SPEFilter);

// The filtering alone, by materialising the product: q (B, N, H, D), qbar (>= N, H, D, R)
// -> (B, N, H, R).
at::Tensor spe_apply_code(const at::Tensor& x, const at::Tensor& code);

}  // namespace spe
