#include "causal_linear_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "dispatch.h"

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

// work: the pair's buffers; scratch: small_gemm's; Tile: its register blocking (vector_ops.h).
template <class Tile, typename T>
SPE_INLINE void forward_pair(const CausalShape& s, const Head<T>& x, T eps, int64_t chunk, T* out, T* den,
                             std::vector<T>& work, std::vector<T>& scratch) {
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
    small_gemm<Tile>(false, true, c, c, M, qc, x.ld_qk, kc, x.ld_qk, false, scores, chunk, scratch);
    keep_lower(scores, c, chunk);
    small_gemm<Tile>(false, false, c, Dv, c, scores, chunk, vc, x.ld_v, false, oc, ld_out, scratch);
    small_gemm<Tile>(false, false, c, Dv, M, qc, x.ld_qk, state, Dv, true, oc, ld_out, scratch);
    for (int i = 0; i < c; ++i) {
      T d = 0;
      for (int j = 0; j <= i; ++j) d += scores[i * chunk + j];
      for (int64_t f = 0; f < M; ++f) d += qc[i * x.ld_qk + f] * key_sum[f];
      den[(start + i) * ld_den] = d;
      const T inv = T(1) / std::max(d, eps);
      for (int64_t e = 0; e < Dv; ++e) oc[i * ld_out + e] *= inv;
    }
    small_gemm<Tile>(true, false, M, Dv, c, kc, x.ld_qk, vc, x.ld_v, true, state, Dv, scratch);
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
template <class Tile, typename T>
SPE_INLINE void backward_pair(const CausalShape& s, const Head<T>& x, const T* out, const T* den, const T* grad_out,
                              T eps, int64_t chunk, T* grad_q, T* grad_k, T* grad_v, std::vector<T>& work,
                              std::vector<T>& scratch) {
  const int64_t M = s.features, Dv = s.value_dim, ld_out = s.heads * Dv, ld_den = s.heads;
  work.assign(M * Dv + M + 2 * chunk * chunk + chunk * Dv + chunk, T(0));
  T* state = work.data();       // (M, Dv)
  T* vector = state + M * Dv;   // (M)
  T* w = vector + M;            // (C, C)
  T* scores = w + chunk * chunk;     // (C, C)
  T* gn = scores + chunk * chunk;    // (C, Dv)
  T* gd = gn + chunk * Dv;           // (C)

  // gn, gd of chunk [start, start + c) and W = mask(gn V^T + gd 1^T)
  // (inlined, so that it is compiled for the instruction set of the function it is in)
  auto chunk_gradients = [&](int64_t start, int c, const T* vc) __attribute__((always_inline)) {
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
    small_gemm<Tile>(false, true, c, c, Dv, gn, Dv, vc, x.ld_v, false, w, chunk, scratch);
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
    small_gemm<Tile>(false, false, c, M, c, w, chunk, kc, x.ld_qk, false, gq, x.ld_qk, scratch);
    small_gemm<Tile>(false, true, c, M, Dv, gn, Dv, state, Dv, true, gq, x.ld_qk, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gq[i * x.ld_qk + f] += gd[i] * vector[f];
    small_gemm<Tile>(true, false, M, Dv, c, kc, x.ld_qk, vc, x.ld_v, true, state, Dv, scratch);
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
    small_gemm<Tile>(true, false, c, M, c, w, chunk, qc, x.ld_qk, false, gk, x.ld_qk, scratch);
    small_gemm<Tile>(false, true, c, M, Dv, vc, x.ld_v, state, Dv, true, gk, x.ld_qk, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gk[i * x.ld_qk + f] += vector[f];
    // grad v_c = mask(Q_c K_c^T)^T gn + K_c state
    small_gemm<Tile>(false, true, c, c, M, qc, x.ld_qk, kc, x.ld_qk, false, scores, chunk, scratch);
    keep_lower(scores, c, chunk);
    small_gemm<Tile>(true, false, c, Dv, c, scores, chunk, gn, Dv, false, gv, x.ld_v, scratch);
    small_gemm<Tile>(false, false, c, Dv, M, kc, x.ld_qk, state, Dv, true, gv, x.ld_v, scratch);
    small_gemm<Tile>(true, false, M, Dv, c, qc, x.ld_qk, gn, Dv, true, state, Dv, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) vector[f] += gd[i] * qc[i * x.ld_qk + f];
  }
}

// The arguments of the whole forward and backward.
template <typename T>
struct ForwardArgs {
  const CausalShape& s;
  const T *q, *k, *v;
  T eps;
  int64_t chunk;
  T *out, *den;
};
template <typename T>
struct BackwardArgs {
  const CausalShape& s;
  const T *q, *k, *v, *out, *den, *grad_out;
  T eps;
  int64_t chunk;
  T *grad_q, *grad_k, *grad_v;
};

// The (batch, head) pairs [begin, end) of one thread.
template <class Tile, typename T>
SPE_INLINE void forward_pairs(const ForwardArgs<T>& a, int64_t begin, int64_t end) {
  const CausalShape& s = a.s;
  std::vector<T> work, scratch;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / s.heads, h = pair % s.heads;
    forward_pair<Tile>(s, head_view(s, a.q, a.k, a.v, pair), a.eps, a.chunk,
                 a.out + (b * s.length * s.heads + h) * s.value_dim, a.den + b * s.length * s.heads + h, work, scratch);
  }
}

template <class Tile, typename T>
SPE_INLINE void backward_pairs(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
  const CausalShape& s = a.s;
  std::vector<T> work, scratch;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / s.heads, h = pair % s.heads;
    const int64_t qk = (b * s.length * s.heads + h) * s.features;
    const int64_t vo = (b * s.length * s.heads + h) * s.value_dim;
    backward_pair<Tile>(s, head_view(s, a.q, a.k, a.v, pair), a.out + vo, a.den + b * s.length * s.heads + h,
                  a.grad_out + vo, a.eps, a.chunk, a.grad_q + qk, a.grad_k + qk, a.grad_v + vo, work, scratch);
  }
}

// The kernels for run_for_isa (dispatch.h).
struct ForwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const ForwardArgs<T>& a, int64_t begin, int64_t end) {
    forward_pairs<Tile>(a, begin, end);
  }
};
struct BackwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
    backward_pairs<Tile>(a, begin, end);
  }
};

}  // namespace

template <typename T>
void causal_linear_attention_forward(const CausalShape& s, const T* q, const T* k, const T* v, T eps,
                                     int64_t chunk, T* out, T* den) {
  const ForwardArgs<T> args{s, q, k, v, eps, chunk, out, den};
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<ForwardPairs>(isa, args, begin, end); });
}

template <typename T>
void causal_linear_attention_backward(const CausalShape& s, const T* q, const T* k, const T* v, const T* out,
                                      const T* den, const T* grad_out, T eps, int64_t chunk, T* grad_q,
                                      T* grad_k, T* grad_v) {
  const BackwardArgs<T> args{s, q, k, v, out, den, grad_out, eps, chunk, grad_q, grad_k, grad_v};
  const Isa isa = best_isa();
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<BackwardPairs>(isa, args, begin, end); });
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
