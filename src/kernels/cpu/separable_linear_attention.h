#pragma once
// The numerator of linear attention (non-causal and causal) whose features factor by input feature, on raw
// pointers (no LibTorch types): psi[b, n, h, d J + j] = phi[b, n, h, d] c[n, h, d, j], the
// coefficients c shared by the batch (sineSPE's exact code on the features: J = 2K [+ 1] per
// feature). psi, M J features per position, is never held whole: each (batch, head) pair builds
// it a tile of positions at a time and multiplies the tile in cache.
//
// Layout, contiguous: phi_q (B, Nq, H, M), phi_k (B, Nk, H, M), v (B, Nk, H, Dv),
// c_q (Nq, H, M, J), c_k (Nk, H, M, J); out (B, Nq, H, Dv); kv (B, H, M J, Dv).
//   kv = sum_m psi_k_m v_m^T,  out_n = kv^T psi_q_n.
// Causal (Nq = Nk): out_n = sum_{m <= n} (psi_q_n . psi_k_m) v_m, by chunks: a masked product inside
// each, an M J x Dv state carried across (kv unused).
// Extra memory: O(T M J + M J Dv) per thread for a tile of T positions, independent of N.
#include <cstdint>

namespace spe::kernels::cpu {

struct SeparableShape {
  int64_t batch, queries, keys, heads, features, coefficients, value_dim;  // B, Nq, Nk, H, M, J, Dv
};

// Fills out and, when not causal, kv (kept for the backward).
template <typename T>
void separable_linear_numerator_forward(const SeparableShape& shape, bool causal, const T* phi_q, const T* phi_k,
                                        const T* v, const T* c_q, const T* c_k, T* out, T* kv);

// Given kv from the forward (not causal; unused when causal) and grad_out (B, Nq, H, Dv): writes
// grad_phi_q, grad_phi_k, grad_v and adds to grad_c_q, grad_c_k (zeroed by the caller: the batch sums
// into them).
template <typename T>
void separable_linear_numerator_backward(const SeparableShape& shape, bool causal, const T* phi_q, const T* phi_k,
                                         const T* v, const T* c_q, const T* c_k, const T* kv, const T* grad_out,
                                         T* grad_phi_q, T* grad_phi_k, T* grad_v, T* grad_c_q, T* grad_c_k);

}  // namespace spe::kernels::cpu
