#pragma once
// Chunked causal linear attention on raw pointers (no LibTorch types): within a chunk of C
// positions a masked C x C product, across chunks a carried M x Dv state; all GEMMs.
//
// Layout: q, k (B, N, H, M) and v, out (B, N, H, Dv), contiguous; den (B, N, H).
//   num_m = sum_{n <= m} (q_m . k_n) v_n,  den_m = sum_{n <= m} q_m . k_n,
//   out_m = num_m / max(den_m, eps).
// Extra memory: O(C (C + M + Dv) + M Dv) per thread, independent of N.
#include <cstdint>

namespace spe::kernels::cpu {

struct CausalShape {
  int64_t batch, length, heads, features, value_dim;  // B, N, H, M, Dv
};

// Fills out and den (den is kept unclamped for the backward).
template <typename T>
void causal_linear_attention_forward(const CausalShape& shape, const T* q, const T* k, const T* v,
                                     T eps, int64_t chunk, T* out, T* den);

// Given out, den from the forward and grad_out, writes grad_q, grad_k, grad_v.
template <typename T>
void causal_linear_attention_backward(const CausalShape& shape, const T* q, const T* k, const T* v,
                                      const T* out, const T* den, const T* grad_out, T eps,
                                      int64_t chunk, T* grad_q, T* grad_k, T* grad_v);

}  // namespace spe::kernels::cpu
