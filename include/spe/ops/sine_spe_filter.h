#pragma once
// The fused sineSPE filter op: qhat or khat straight from the factors of a sinusoidal code,
// without ever holding the (N, H, D, R) code, with its own backward.
#include <ATen/core/Tensor.h>

namespace spe {

// A sinusoidal SPE code kept as its factors. For position n, head h, feature d:
//   Omega_{2k}(n) = cos(2 pi f_k n + theta_k), Omega_{2k+1}(n) = sin(2 pi f_k n + theta_k)
//   code[n, h, d, :] = gate_scale[h, d] sum_j Omega_j(n) weights[h, d, j, :] + gate_shift[h, d, :]
// with theta = offsets for the queries' code (Qbar) and theta = 0 for the keys' code (Kbar).
struct SineCodeFactors {
  at::Tensor frequencies;  // (H, D, K) float64: f = sigmoid(freqs) / 2
  at::Tensor offsets;      // (H, D, K) float64: theta of the query side
  at::Tensor weights;      // (H, D, 2K, R): Z lambda / sqrt(2K) / (R D)^(1/4)
  at::Tensor gate_scale;   // (H, D), or undefined for 1
  at::Tensor gate_shift;   // (H, D, R), or undefined for 0
  int64_t length = 0;      // the code covers positions 0 .. length-1
};

namespace ops {

// x: (B, N, H, D) -> out[b, n, h, :] = sum_d x[b, n, h, d] code[first_position + n, h, d, :],
// (B, N, H, R), for the code of the given phases (offsets for queries, zeros for keys).
// CPU, float32 or float64 (frequencies and phases always float64). Differentiable once with
// respect to x, frequencies, phases, weights, gate_scale and gate_shift.
at::Tensor sine_spe_filter(const at::Tensor& x, const at::Tensor& frequencies, const at::Tensor& phases,
                           const at::Tensor& weights, const at::Tensor& gate_scale, const at::Tensor& gate_shift,
                           int64_t first_position = 0);

// The same for one side of a factored code: query_side selects Qbar (offsets) or Kbar (no offsets);
// x holds positions first_position .. first_position + N - 1 of the code.
at::Tensor sine_spe_filter(const at::Tensor& x, const SineCodeFactors& code, bool query_side,
                           int64_t first_position = 0);

// One position of a factored code while decoding, from parts made once per sequence and once per
// position (spe_code.h: sine_step_rows, sine_step_coefficients), so that neither is rebuilt for
// every layer and token:
//   out[b, 0, h, :] = sum_{d, j} x[b, 0, h, d] coefficients[h, d, j] rows[h, d, j, :]
// x: (B, 1, H, D); coefficients: (H, D, 2K + 1), the position's [Omega(n); 1] on one side of the
// code; rows: (H, D, 2K + 1, R), [a_d W_d; c_d] -> (B, 1, H, R). Equals sine_spe_filter at that
// position. CPU, float32 or float64, forward only (decoding runs without gradients).
at::Tensor sine_spe_filter_position(const at::Tensor& x, const at::Tensor& coefficients, const at::Tensor& rows);

}  // namespace ops
}  // namespace spe
