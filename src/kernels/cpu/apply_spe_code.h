#pragma once
// SPE's filtering by a materialised code (convSPE's, or any code held whole), on raw pointers (no
// LibTorch types):
//   out[b, n, h, :] = sum_d x[b, n, h, d] code[n, h, d, :]
// one (B x D)(D x R) product per (position, head) pair, on the kernels' register-blocked products.
// Layout, contiguous: x (B, N, H, D), code (N, H, D, R) (its first N rows), out (B, N, H, R).
#include <cstdint>

namespace spe::kernels::cpu {

struct CodeShape {
  int64_t batch, length, heads, dim, realizations;  // B, N, H, D, R
};

template <typename T>
void apply_spe_code_forward(const CodeShape& shape, const T* x, const T* code, T* out);

// Given grad_out (B, N, H, R): grad_x (B, N, H, D) = grad_out code^T per pair, and grad_code
// (N, H, D, R) = x^T grad_out per pair (summed over the batch); either may be null (not needed).
template <typename T>
void apply_spe_code_backward(const CodeShape& shape, const T* x, const T* code, const T* grad_out, T* grad_x,
                             T* grad_code);

}  // namespace spe::kernels::cpu
