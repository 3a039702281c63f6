#pragma once
// The fused numerator of linear attention (non-causal or causal) with separable positioned features
// (sineSPE's exact code on the features, attention/linear.h SeparableFeatures): psi is built a
// tile of positions at a time and never held whole, with its own backward.
#include <ATen/core/Tensor.h>

namespace spe::ops {

// phi_q: (B, Nq, H, M), phi_k: (B, Nk, H, M), v: (B, Nk, H, Dv), coefficients_q: (Nq, H, M, J),
// coefficients_k: (Nk, H, M, J); CPU, one dtype, float32 or float64 -> (B, Nq, H, Dv):
//   out[b, n, h] = sum_m (psi_q[b, n, h] . psi_k[b, m, h]) v[b, m, h],
//   psi[b, n, h, d J + j] = phi[b, n, h, d] coefficients[n, h, d, j].
// With `causal` (Nq = Nk) the sum runs over m <= n: chunks of positions, a masked product inside
// each, an M J x Dv state carried across. Unnormalised (attention/linear.h divides by the plain
// features' sums); mask padded keys by zeroing their phi_k. Differentiable once with respect to
// all five inputs.
at::Tensor separable_linear_numerator(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                      const at::Tensor& coefficients_q, const at::Tensor& coefficients_k,
                                      bool causal = false);

}  // namespace spe::ops
