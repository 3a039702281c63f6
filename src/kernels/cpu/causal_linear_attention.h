#pragma once
// Chunked causal linear attention on raw pointers (no LibTorch types): within a chunk of C
// positions a masked C x C product, across chunks a carried M x Dv state; all GEMMs.
//
// Layout: q, k (B, N, H, M) and v, out (B, N, H, Dv), contiguous; den (B, N, H).
//   num_m = sum_{n <= m} (q_m . k_n) v_n,  den_m = sum_{n <= m} q_m . k_n,
//   out_m = num_m / max(den_m, eps).
// With a per-head decay (log_decay: (H,), log g_h <= 0; nullptr for none) each pair is weighed
// by g_h^(m - n) in num and den: inside a chunk by the mask g^(i - j), j <= i; across chunks the
// carried state decays by g^c per chunk of c positions and a query at i reads it with g^(i + 1).
// Every power of g has a non-negative exponent, so nothing overflows at any N.
// Extra memory: O(C (C + M + Dv) + M Dv) per thread, independent of N.
#include <cstdint>

namespace spe::kernels::cpu {

struct CausalShape {
  int64_t batch, length, heads, features, value_dim;  // B, N, H, M, Dv
};

// Fills out and den (den is kept unclamped for the backward). Without normalize, out holds num
// itself (the raw sums; eps unused).
template <typename T>
void causal_linear_attention_forward(const CausalShape& shape, const T* q, const T* k, const T* v,
                                     const T* log_decay, T eps, int64_t chunk, T* out, T* den, bool normalize = true);

// Given out, den from the forward and grad_out, writes grad_q, grad_k, grad_v and, when
// grad_log_decay is given (with log_decay), d loss / d log g_h of each (batch, head) pair into
// grad_log_decay (B, H) (the caller sums over the batch):
//   sum_{n <= m} (m - n) X[m, n] = sum_m m (q_m . grad q_m) - sum_n n (k_n . grad k_n),
// X[m, n] being the gradient of the pair's weight times that weight (rows of X sum to
// q_m . grad q_m, columns to k_n . grad k_n).
// The raw sums' backward: with grad_den (B, N, H) given, grad_out is d loss / d num and grad_den
// d loss / d den (out, den and eps unused; may be null).
template <typename T>
void causal_linear_attention_backward(const CausalShape& shape, const T* q, const T* k, const T* v,
                                      const T* log_decay, const T* out, const T* den, const T* grad_out, T eps,
                                      int64_t chunk, T* grad_q, T* grad_k, T* grad_v, T* grad_log_decay,
                                      const T* grad_den = nullptr);

}  // namespace spe::kernels::cpu
