#pragma once
// Linear attention on feature-mapped queries and keys (Katharopoulos et al. 2020):
//   out_m = phi(q_m)^T (sum_n phi(k_n) v_n^T) / max(phi(q_m)^T sum_n phi(k_n), eps)
// non-causal (sums over all unmasked keys) and causal (sums over n <= m), plus the recurrent
// form of the causal one whose state (M x Dv per batch and head) does not grow with the position.
#include <ATen/core/Tensor.h>

namespace spe {

// phi_q: (B, Nq, H, M), phi_k: (B, Nk, H, M), v: (B, Nk, H, Dv) -> (B, Nq, H, Dv).
// key_padding: (B, Nk) bool (true = real token) or undefined.
at::Tensor linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const at::Tensor& key_padding = {}, double eps = 1e-6);

// Causal: position m attends to n <= m; Nq == Nk. Straightforward O(N^2) reference form.
at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                   const at::Tensor& v, const at::Tensor& key_padding = {},
                                   double eps = 1e-6);

// The same causal attention in its quadratic form, (B, H, N, N) similarities: the reference the
// fused kernel is tested and benchmarked against, and the path for devices it does not cover.
// No key padding (mask phi_k first).
at::Tensor causal_linear_attention_quadratic(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                             const at::Tensor& v, double eps = 1e-6);

// The prefix sums of causal linear attention after `position` tokens.
struct LinearAttentionState {
  at::Tensor kv;          // (B, H, M, Dv): sum_n phi(k_n) v_n^T
  at::Tensor normalizer;  // (B, H, M):     sum_n phi(k_n)
  int64_t position = 0;   // tokens absorbed so far

  // The empty state for B x H heads of M features and Dv value features.
  static LinearAttentionState zeros(int64_t batch, int64_t heads, int64_t features,
                                    int64_t value_dim, const at::TensorOptions& options);
};

// One decoding step: absorbs (phi_k_t, v_t) into the state, then reads it with phi_q_t.
// phi_q_t, phi_k_t: (B, H, M), v_t: (B, H, Dv) -> (B, H, Dv); equals causal_linear_attention
// at this position.
at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, LinearAttentionState& state,
                                        double eps = 1e-6);

}  // namespace spe
