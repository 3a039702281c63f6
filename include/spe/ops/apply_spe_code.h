#pragma once
// SPE's filtering by a materialised code (convSPE's), fused on CPU, with its own backward: one
// small product per (position, head) instead of ATen's batched einsum.
#include <ATen/core/Tensor.h>

namespace spe::ops {

// x: (B, N, H, D), code: (N' >= N, H, D, R), its first N rows used; CPU, one dtype, float32 or
// float64 -> (B, N, H, R):
//   out[b, n, h, :] = sum_d x[b, n, h, d] code[n, h, d, :]
// Differentiable with respect to both (the code's gradient sums over the batch).
at::Tensor apply_spe_code(const at::Tensor& x, const at::Tensor& code);

}  // namespace spe::ops
