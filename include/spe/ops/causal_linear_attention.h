#pragma once
// The fused causal linear attention op: chunked GEMMs forward and backward, memory flat in N.
#include <ATen/core/Tensor.h>

#include <tuple>

namespace spe::ops {

// Positions per chunk by default: 32 ran the forward 0-28 % faster than 64 (the masked C x C part
// shrinks with C) and forward + backward as fast or faster, on AVX-512 and AVX2, D 32 and 64
// (docs/BENCHMARKS.md, "Chunk of the causal kernels").
inline constexpr int64_t kCausalChunk = 32;

// phi_q, phi_k: (B, N, H, M), v: (B, N, H, Dv), CPU, float32 or float64 -> (B, N, H, Dv):
// out_m = sum_{n <= m} (phi_q_m . phi_k_n) v_n / max(sum_{n <= m} phi_q_m . phi_k_n, eps).
// Differentiable once with respect to all three inputs. `chunk` is the block of positions
// handled by one masked C x C product.
at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                   double eps = 1e-6, int64_t chunk = kCausalChunk);

// The same with the pair (m, n) weighed by g_h^(m - n) in numerator and normaliser (encoding/decay.h):
// out_m = sum_{n <= m} g_h^(m - n) (phi_q_m . phi_k_n) v_n / max(sum_{n <= m} g_h^(m - n) phi_q_m . phi_k_n, eps).
// log_decay: (H,), log g_h <= 0, the inputs' dtype. Differentiable once in all four inputs; the
// same kernel, memory flat in N, no power of g with a negative exponent.
at::Tensor decayed_causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                           const at::Tensor& log_decay, double eps = 1e-6, int64_t chunk = kCausalChunk);

// Its sums before the division, {num (B, N, H, Dv), den (B, N, H)}:
//   num_m = sum_{n <= m} g_h^(m - n) (phi_q_m . phi_k_n) v_n,   den_m = sum_{n <= m} g_h^(m - n) phi_q_m . phi_k_n.
// The non-causal decay g^|m - n| adds the same sums run backwards (decayed_linear_attention does).
// Differentiable once in all four inputs, through both outputs.
std::tuple<at::Tensor, at::Tensor> decayed_causal_linear_sums(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                                              const at::Tensor& v, const at::Tensor& log_decay,
                                                              int64_t chunk = kCausalChunk);

}  // namespace spe::ops
