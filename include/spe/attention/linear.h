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

// Causal: position m attends to n <= m; Nq == Nk. The fused chunked kernel on CPU (float32 and
// float64), the quadratic form elsewhere.
at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                   const at::Tensor& v, const at::Tensor& key_padding = {},
                                   double eps = 1e-6);

// The same causal attention in its quadratic form, (B, H, N, N) similarities: the reference the
// fused kernel is tested and benchmarked against, and the path for devices it does not cover.
// No key padding (mask phi_k first).
at::Tensor causal_linear_attention_quadratic(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                             const at::Tensor& v, double eps = 1e-6);

// Relative positions on the features (RoFormer's linear form; SPE applied to phi(q), phi(k)):
// the numerator compares positioned features psi, the normaliser the plain features phi, so the
// weight of the pair (m, n) can depend on m - n while the normaliser stays positive:
//   out_m = sum_n (psi_q_m . psi_k_n) v_n / max(sum_n phi_q_m . phi_k_n, eps)
// A feature map applied after a positional step would break the dependence on m - n alone.
struct PositionedFeatures {
  at::Tensor query;  // psi_q: (B, Nq, H, P)
  at::Tensor key;    // psi_k: (B, Nk, H, P)
};

// phi_q, phi_k, v and key_padding as for linear_attention; the numerator's features besides.
at::Tensor linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const PositionedFeatures& numerator, const at::Tensor& key_padding = {},
                            double eps = 1e-6);

// The same, causal (Nq == Nk): the numerator by causal_product, the normaliser by prefix sums.
at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                   const PositionedFeatures& numerator, const at::Tensor& key_padding = {},
                                   double eps = 1e-6);

// Positioned features that factor by feature, with coefficients shared by the batch (sineSPE's
// exact code on the features: J = 2K [+ 1] coefficients per feature, SineSPEImpl::exact_coefficients):
//   psi[b, n, h, d J + j] = phi[b, n, h, d] coefficients[n, h, d, j]
struct SeparableFeatures {
  at::Tensor query;  // (Nq, H, M, J)
  at::Tensor key;    // (Nk, H, M, J)
};

// psi_q, psi_k (B, N, H, M J) of phi_q, phi_k: the separable features materialised.
PositionedFeatures positioned_features(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                       const SeparableFeatures& separable);

// linear_attention (non-causal) with the numerator's features psi of `separable`: on CPU (float32,
// float64) the fused op (ops/separable_linear_attention.h), which never holds psi (B, N, H, M J);
// elsewhere psi materialised.
at::Tensor separable_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                      const SeparableFeatures& separable, const at::Tensor& key_padding = {},
                                      double eps = 1e-6);

// The same, causal (Nq == Nk): the fused op's causal form on CPU (chunks of positions, memory flat
// in N), causal_linear_attention over psi materialised elsewhere.
at::Tensor causal_separable_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                             const SeparableFeatures& separable, const at::Tensor& key_padding = {},
                                             double eps = 1e-6);

// The unnormalised causal product sum_{n <= m} (a_m . b_n) v_n of a: (B, N, H, P), b: (B, N, H, P),
// v: (B, N, H, Dv) -> (B, N, H, Dv), in chunks of `chunk` positions: a masked C x C product
// inside each chunk and prefix sums of b_n v_n^T across chunks (ATen ops, any device, autograd).
at::Tensor causal_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v, int64_t chunk = 64);

// Exponential decay with the distance (encoding/decay.h; RetNet's retention with a normaliser):
//   out_m = sum_n g_h^|m - n| (phi_q_m . phi_k_n) v_n / max(sum_n g_h^|m - n| phi_q_m . phi_k_n, eps)
// over n <= m when causal, every n otherwise (both Nq == Nk: queries and keys share positions).
// log_decay: (H,), log g_h <= 0; other arguments as for linear_attention. Differentiable in every
// input, log_decay included; linear in N: causal on CPU (float32, float64) the fused chunked kernel
// (ops::decayed_causal_linear_attention), else decayed_causal_product (twice when not causal).
at::Tensor decayed_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                    const at::Tensor& log_decay, bool causal, const at::Tensor& key_padding = {},
                                    double eps = 1e-6);

// sum_{n <= m} g_h^(m - n) (a_m . b_n) v_n for a, b: (B, N, H, P), v: (B, N, H, Dv), log_decay
// (H,) -> (B, N, H, Dv), in chunks of `chunk` positions: a decayed C x C product inside each chunk
// and a state carried across chunks (decayed by g^C per chunk). Every power of g it forms has a
// non-negative exponent, so no factor overflows at any N.
at::Tensor decayed_causal_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v,
                                  const at::Tensor& log_decay, int64_t chunk = 64);

// A relative bias under kernelized attention (Luo et al., NeurIPS 2021; encoding/toeplitz.h):
//   out_m = sum_n e^(b_h(m - n)) (phi_q_m . phi_k_n) v_n / max(sum_n e^(b_h(m - n)) phi_q_m . phi_k_n, eps)
// over n <= m when causal, every n otherwise (Nq == Nk). lag_bias: (H, 2N - 1), b_h for lags
// -(N - 1) .. N - 1. The Toeplitz sums sum_n e^(b(m - n)) phi_k_n v_n^T are circulant products
// of length 2N by FFT: O(N log N) per (feature, value feature) pair, with (B, H, M, Dv + 1, 2N)
// held in memory. No recurrent form for arbitrary weights (a new key's weight differs for every
// later query); the clipped form below has one.
at::Tensor toeplitz_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                     const at::Tensor& lag_bias, bool causal, const at::Tensor& key_padding = {},
                                     double eps = 1e-6);

// The same with the bias clipped as the module keeps it (encoding/toeplitz.h): bias (H, 2 clip + 1)
// for lags -clip .. clip, every farther lag sharing the bias of its end. Exact in either of two
// ways, chosen by their cost: the FFT above on the expanded table, or, for clip < N, windows of
// max(clip, 16) positions: each query reads the keys of its block and its neighbours with their
// own weights and all farther keys (lags beyond the clip, one weight per side) through per-block
// prefix sums of k v^T, O(N clip (M + Dv)) time and O(N (M + Dv) + (N / block) M Dv) memory.
at::Tensor clipped_toeplitz_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                             const at::Tensor& bias, bool causal, const at::Tensor& key_padding = {},
                                             double eps = 1e-6);

// The prefix sums of causal linear attention after `position` tokens.
struct LinearAttentionState {
  at::Tensor kv;          // (B, H, P, Dv): sum_n psi(k_n) v_n^T (psi = phi without positioned features)
  at::Tensor normalizer;  // (B, H, M):     sum_n phi(k_n)
  int64_t position = 0;   // tokens absorbed so far

  // The empty state for B x H heads of M features and Dv value features; numerator_features: P
  // when the numerator has positioned features (0: P = M).
  static LinearAttentionState zeros(int64_t batch, int64_t heads, int64_t features,
                                    int64_t value_dim, const at::TensorOptions& options,
                                    int64_t numerator_features = 0);
};

// One decoding step: absorbs (phi_k_t, v_t) into the state, then reads it with phi_q_t.
// phi_q_t, phi_k_t: (B, H, M), v_t: (B, H, Dv) -> (B, H, Dv); equals causal_linear_attention
// at this position.
at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, LinearAttentionState& state,
                                        double eps = 1e-6);

// The step with positioned numerator features psi_q_t, psi_k_t: (B, H, P); equals the causal
// linear_attention with PositionedFeatures at this position. The state is made with P.
at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, const PositionedFeatures& numerator_t,
                                        LinearAttentionState& state, double eps = 1e-6);

// The decayed step: the state decays by g_h, then absorbs (phi_k_t, v_t) and is read with
// phi_q_t; equals decayed_linear_attention (causal) at this position. log_decay: (H,).
at::Tensor decayed_causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                                const at::Tensor& v_t, const at::Tensor& log_decay,
                                                LinearAttentionState& state, double eps = 1e-6);

// The clipped Toeplitz form's decoding state: every key at a lag >= clip weighs e^(b(clip)), so
// keys leave the window of the last clip positions for plain prefix sums as they pass the clip.
struct ToeplitzState {
  LinearAttentionState far;  // the sums of the keys at lags >= clip (made at the first step)
  at::Tensor keys, values;   // the last W <= clip keys and values, oldest first: (B, H, W, M), (B, H, W, Dv)
};

// One decoding step of clipped_toeplitz_linear_attention (causal): absorbs (phi_k_t, v_t), reads
// the window with each lag's weight and the far sums with e^(b(clip)). phi_q_t, phi_k_t: (B, H, M),
// v_t: (B, H, Dv), bias: (H, 2 clip + 1) -> (B, H, Dv). O(clip (M + Dv) + M Dv) per step.
at::Tensor clipped_toeplitz_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                                  const at::Tensor& v_t, const at::Tensor& bias, ToeplitzState& state,
                                                  double eps = 1e-6);

}  // namespace spe
