#pragma once
// The sineSPE filter without materialising the codes (raw pointers, no LibTorch types).
//
// For position n (first_position + i), head h, feature d:
//   Omega_{2k}(n) = cos(2 pi f_k n + theta_k),  Omega_{2k+1}(n) = sin(2 pi f_k n + theta_k)
//   code[n, h, d, :] = a[h, d] * sum_j Omega_j(n) W[h, d, j, :] + c[h, d, :]
//   out[b, n, h, :]  = sum_d x[b, n, h, d] code[n, h, d, :]
// The codes of a tile of 16 positions (16 x D x R) are built, applied to the whole batch, then
// dropped: memory O(16 D R) per thread instead of O(N H D R). The backward rebuilds them.
//
// Layout (contiguous): x (B, N, H, D), out (B, N, H, R), frequencies and phases (H, D, K) in
// float64 (each tile's first phase is computed and turned in float64 whatever T is; its
// positions' cos and sin follow in T, one product by fixed rotations), weights W (H, D, 2K, R),
// gate_scale a (H, D) and gate_shift c (H, D, R) (a = 1, c = 0 without a gate).
#include <cstdint>

namespace spe::kernels::cpu {

struct SineFilterShape {
  int64_t batch, length, heads, dim, sines, realizations;  // B, N, H, D, K, R
  int64_t first_position;
};

template <typename T>
void sine_spe_filter_forward(const SineFilterShape& shape, const T* x, const double* frequencies,
                             const double* phases, const T* weights, const T* gate_scale,
                             const T* gate_shift, T* out);

// Gradients of sum(out * grad_out) with respect to every input.
template <typename T>
void sine_spe_filter_backward(const SineFilterShape& shape, const T* x, const double* frequencies,
                              const double* phases, const T* weights, const T* gate_scale,
                              const T* gate_shift, const T* grad_out, T* grad_x, double* grad_frequencies,
                              double* grad_phases, T* grad_weights, T* grad_gate_scale, T* grad_gate_shift);

// One position of the filter from parts made before (decoding, where they are shared across
// tokens and layers): for each head h, with F = D (2K + 1) rows,
//   out[b, h, :] = sum_{d, j} x[b, h, d] coefficients[h, d, j] rows[h, d, j, :]
// coefficients (H, D, 2K + 1): [Omega(n); 1] of the position; rows (H, D, 2K + 1, R): [a_d W_d; c_d].
// x (B, H, D), out (B, H, R). shape.length must be 1.
template <typename T>
void sine_spe_filter_position(const SineFilterShape& shape, const T* x, const T* coefficients, const T* rows, T* out);

}  // namespace spe::kernels::cpu
