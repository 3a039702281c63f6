#include "causal_linear_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "blas.h"

namespace spe::kernels::cpu {
namespace {

// Views of one (batch, head) pair: row n of a (B, N, H, F) tensor is at base + n * H * F.
template <typename T>
struct Head {
  const T* q;
  const T* k;
  const T* v;
  int64_t ld_qk, ld_v;  // H * M, H * Dv
};

template <typename T>
Head<T> head_view(const CausalShape& s, const T* q, const T* k, const T* v, int64_t pair) {
  const int64_t b = pair / s.heads, h = pair % s.heads;
  const int64_t qk_offset = (b * s.length * s.heads + h) * s.features;
  const int64_t v_offset = (b * s.length * s.heads + h) * s.value_dim;
  return {q + qk_offset, k + qk_offset, v + v_offset, s.heads * s.features, s.heads * s.value_dim};
}

// Zeroes the strictly upper triangle of an n x n row-major matrix with leading dimension ld.
template <typename T>
void keep_lower(T* a, int64_t n, int64_t ld) {
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * ld + i + 1, a + i * ld + n, T(0));
}

template <typename T>
void forward_pair(const CausalShape& s, const Head<T>& x, T eps, int64_t chunk, T* out, T* den,
                  std::vector<T>& work) {
  const int64_t M = s.features, Dv = s.value_dim, ld_out = s.heads * Dv, ld_den = s.heads;
  work.assign(M * Dv + M + chunk * chunk, T(0));
  T* state = work.data();          // (M, Dv): sum_n k_n v_n^T over past chunks
  T* key_sum = state + M * Dv;     // (M):     sum_n k_n over past chunks
  T* scores = key_sum + M;         // (C, C)
  for (int64_t start = 0; start < s.length; start += chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const T* qc = x.q + start * x.ld_qk;
    const T* kc = x.k + start * x.ld_qk;
    const T* vc = x.v + start * x.ld_v;
    T* oc = out + start * ld_out;
    // scores = mask(Q_c K_c^T); out_c = scores V_c + Q_c state
    gemm(false, true, c, c, M, T(1), qc, x.ld_qk, kc, x.ld_qk, T(0), scores, chunk);
    keep_lower(scores, c, chunk);
    gemm(false, false, c, Dv, c, T(1), scores, chunk, vc, x.ld_v, T(0), oc, ld_out);
    gemm(false, false, c, Dv, M, T(1), qc, x.ld_qk, state, Dv, T(1), oc, ld_out);
    for (int i = 0; i < c; ++i) {
      T d = 0;
      for (int j = 0; j <= i; ++j) d += scores[i * chunk + j];
      for (int64_t f = 0; f < M; ++f) d += qc[i * x.ld_qk + f] * key_sum[f];
      den[(start + i) * ld_den] = d;
      const T inv = T(1) / std::max(d, eps);
      for (int64_t e = 0; e < Dv; ++e) oc[i * ld_out + e] *= inv;
    }
    gemm(true, false, M, Dv, c, T(1), kc, x.ld_qk, vc, x.ld_v, T(1), state, Dv);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) key_sum[f] += kc[i * x.ld_qk + f];
  }
}

// Backward of one (batch, head) pair. With g = grad_out:
//   gn_m = g_m / max(den_m, eps)                 (the gradient of num_m)
//   gd_m = -(g_m . out_m) / den_m if den_m > eps (the gradient of den_m), else 0
//   W[m, n] = gn_m . v_n + gd_m for n <= m       (d loss / d (q_m . k_n))
//   grad q_m = sum_{n <= m} W[m, n] k_n,  grad k_n = sum_{m >= n} W[m, n] q_m,
//   grad v_n = sum_{m >= n} (q_m . k_n) gn_m.
// A forward sweep carries the prefix sums for grad q; a backward sweep the suffix sums
// sum_m q_m gn_m^T and sum_m gd_m q_m for grad k and grad v.
template <typename T>
void backward_pair(const CausalShape& s, const Head<T>& x, const T* out, const T* den, const T* grad_out,
                   T eps, int64_t chunk, T* grad_q, T* grad_k, T* grad_v, std::vector<T>& work) {
  const int64_t M = s.features, Dv = s.value_dim, ld_out = s.heads * Dv, ld_den = s.heads;
  work.assign(M * Dv + M + 2 * chunk * chunk + chunk * Dv + chunk, T(0));
  T* state = work.data();       // (M, Dv)
  T* vector = state + M * Dv;   // (M)
  T* w = vector + M;            // (C, C)
  T* scores = w + chunk * chunk;     // (C, C)
  T* gn = scores + chunk * chunk;    // (C, Dv)
  T* gd = gn + chunk * Dv;           // (C)

  // gn, gd of chunk [start, start + c) and W = mask(gn V^T + gd 1^T)
  auto chunk_gradients = [&](int64_t start, int c, const T* vc) {
    for (int i = 0; i < c; ++i) {
      const T d = den[(start + i) * ld_den], clamped = std::max(d, eps);
      const T* g = grad_out + (start + i) * ld_out;
      const T* o = out + (start + i) * ld_out;
      T dot = 0;
      for (int64_t e = 0; e < Dv; ++e) {
        gn[i * Dv + e] = g[e] / clamped;
        dot += g[e] * o[e];
      }
      gd[i] = d > eps ? -dot / clamped : T(0);
    }
    gemm(false, true, c, c, Dv, T(1), gn, Dv, vc, x.ld_v, T(0), w, chunk);
    for (int i = 0; i < c; ++i)
      for (int j = 0; j <= i; ++j) w[i * chunk + j] += gd[i];
    keep_lower(w, c, chunk);
  };

  // Forward sweep: grad q_c = W K_c + gn state^T + gd key_sum^T, state/key_sum over past chunks.
  for (int64_t start = 0; start < s.length; start += chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const T* kc = x.k + start * x.ld_qk;
    const T* vc = x.v + start * x.ld_v;
    T* gq = grad_q + start * x.ld_qk;
    chunk_gradients(start, c, vc);
    gemm(false, false, c, M, c, T(1), w, chunk, kc, x.ld_qk, T(0), gq, x.ld_qk);
    gemm(false, true, c, M, Dv, T(1), gn, Dv, state, Dv, T(1), gq, x.ld_qk);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gq[i * x.ld_qk + f] += gd[i] * vector[f];
    gemm(true, false, M, Dv, c, T(1), kc, x.ld_qk, vc, x.ld_v, T(1), state, Dv);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) vector[f] += kc[i * x.ld_qk + f];
  }

  // Backward sweep: state = sum_m q_m gn_m^T and vector = sum_m gd_m q_m over later chunks.
  std::fill(state, state + M * Dv + M, T(0));
  const int64_t last = ((s.length - 1) / chunk) * chunk;
  for (int64_t start = last; start >= 0; start -= chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const T* qc = x.q + start * x.ld_qk;
    const T* kc = x.k + start * x.ld_qk;
    const T* vc = x.v + start * x.ld_v;
    T* gk = grad_k + start * x.ld_qk;
    T* gv = grad_v + start * x.ld_v;
    chunk_gradients(start, c, vc);
    // grad k_c = W^T Q_c + V_c state^T + 1 vector^T
    gemm(true, false, c, M, c, T(1), w, chunk, qc, x.ld_qk, T(0), gk, x.ld_qk);
    gemm(false, true, c, M, Dv, T(1), vc, x.ld_v, state, Dv, T(1), gk, x.ld_qk);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gk[i * x.ld_qk + f] += vector[f];
    // grad v_c = mask(Q_c K_c^T)^T gn + K_c state
    gemm(false, true, c, c, M, T(1), qc, x.ld_qk, kc, x.ld_qk, T(0), scores, chunk);
    keep_lower(scores, c, chunk);
    gemm(true, false, c, Dv, c, T(1), scores, chunk, gn, Dv, T(0), gv, x.ld_v);
    gemm(false, false, c, Dv, M, T(1), kc, x.ld_qk, state, Dv, T(1), gv, x.ld_v);
    gemm(true, false, M, Dv, c, T(1), qc, x.ld_qk, gn, Dv, T(1), state, Dv);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) vector[f] += gd[i] * qc[i * x.ld_qk + f];
  }
}

}  // namespace

template <typename T>
void causal_linear_attention_forward(const CausalShape& s, const T* q, const T* k, const T* v, T eps,
                                     int64_t chunk, T* out, T* den) {
  const SingleThreadedBlas one_blas_thread;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> work;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / s.heads, h = pair % s.heads;
      forward_pair(s, head_view(s, q, k, v, pair), eps, chunk,
                   out + (b * s.length * s.heads + h) * s.value_dim, den + b * s.length * s.heads + h, work);
    }
  });
}

template <typename T>
void causal_linear_attention_backward(const CausalShape& s, const T* q, const T* k, const T* v, const T* out,
                                      const T* den, const T* grad_out, T eps, int64_t chunk, T* grad_q,
                                      T* grad_k, T* grad_v) {
  const SingleThreadedBlas one_blas_thread;
  at::parallel_for(0, s.batch * s.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> work;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / s.heads, h = pair % s.heads;
      const int64_t qk = (b * s.length * s.heads + h) * s.features;
      const int64_t vo = (b * s.length * s.heads + h) * s.value_dim;
      backward_pair(s, head_view(s, q, k, v, pair), out + vo, den + b * s.length * s.heads + h,
                    grad_out + vo, eps, chunk, grad_q + qk, grad_k + qk, grad_v + vo, work);
    }
  });
}

#define SPE_INSTANTIATE(T)                                                                         \
  template void causal_linear_attention_forward<T>(const CausalShape&, const T*, const T*, const T*, \
                                                   T, int64_t, T*, T*);                            \
  template void causal_linear_attention_backward<T>(const CausalShape&, const T*, const T*,        \
                                                    const T*, const T*, const T*, const T*, T,     \
                                                    int64_t, T*, T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
