#include "causal_linear_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
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

// The decay of one head, as tables of its powers (nullptr members: no decay).
template <typename T>
struct Decay {
  const T* powers = nullptr;  // (C + 1): g^e for e = 0 .. C
  const T* mask = nullptr;    // (C, C): g^(i - j) for j <= i, 0 above
  T power(int64_t e) const { return powers[e]; }
};

// The tables of g = exp(log_decay) for chunks of `chunk`, in `tables`; no decay without log_decay.
template <typename T>
Decay<T> decay_tables(const T* log_decay, int64_t chunk, std::vector<T>& tables) {
  if (log_decay == nullptr) return {};
  tables.assign((chunk + 1) + chunk * chunk, T(0));
  T* powers = tables.data();
  T* mask = powers + chunk + 1;
  powers[0] = T(1);  // (not exp(log g * 0): NaN for g = 0)
  for (int64_t e = 1; e <= chunk; ++e) powers[e] = static_cast<T>(std::exp(static_cast<double>(*log_decay) * e));
  for (int64_t i = 0; i < chunk; ++i)
    for (int64_t j = 0; j <= i; ++j) mask[i * chunk + j] = powers[i - j];
  return {powers, mask};
}

// Keeps the lower triangle (j <= i) of an n x n row-major matrix with leading dimension ld, each
// entry times the decay mask g^(i - j) when decayed, and zeroes the strictly upper triangle.
template <typename T>
SPE_INLINE void mask_lower(T* a, int64_t n, int64_t ld, const Decay<T>& d, int64_t chunk) {
  for (int64_t i = 0; i < n; ++i) {
    T* row = a + i * ld;
    if (d.mask)
      for (int64_t j = 0; j <= i; ++j) row[j] *= d.mask[i * chunk + j];
    std::fill(row + i + 1, row + n, T(0));
  }
}

// Row i of a (rows x cols, leading dimension ld) times g^(first + step i); nothing without decay.
template <typename T>
SPE_INLINE void scale_rows(const Decay<T>& d, int64_t first, int64_t step, T* a, int64_t rows, int64_t cols,
                           int64_t ld) {
  if (!d.powers) return;
  for (int64_t i = 0; i < rows; ++i) {
    const T f = d.power(first + step * i);
    for (int64_t e = 0; e < cols; ++e) a[i * ld + e] *= f;
  }
}

// The carried sums (state: rows x cols, vector: rows) times g^c, a chunk of c positions later.
template <typename T>
SPE_INLINE void decay_state(const Decay<T>& d, int64_t c, T* state, int64_t rows, int64_t cols, T* vector) {
  if (!d.powers) return;
  const T f = d.power(c);
  for (int64_t e = 0; e < rows * cols; ++e) state[e] *= f;
  for (int64_t e = 0; e < rows; ++e) vector[e] *= f;
}

// The keys of a chunk as the state absorbs them, row j times g^(c - 1 - j) (its decay up to the
// chunk's last position): a copy in `scaled` (c x M) when decayed, else k itself.
template <typename T>
SPE_INLINE const T* keys_to_end(const Decay<T>& d, const T* k, int64_t ld, int64_t c, int64_t M, T* scaled,
                                int64_t& ld_out) {
  ld_out = ld;
  if (!d.powers) return k;
  for (int64_t j = 0; j < c; ++j) {
    const T f = d.power(c - 1 - j);
    for (int64_t f_ = 0; f_ < M; ++f_) scaled[j * M + f_] = f * k[j * ld + f_];
  }
  ld_out = M;
  return scaled;
}

// sum_i (first + i) (a_i . b_i) over c rows of M, for d loss / d log g: summed by feature in
// `lanes` (M; independent sums, so the loop vectorises), then across features in float64.
template <typename T>
SPE_INLINE double weighted_row_dots(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t c, int64_t M,
                                    double first, T* lanes) {
  std::fill(lanes, lanes + M, T(0));
  for (int64_t i = 0; i < c; ++i) {
    const T w = static_cast<T>(first + static_cast<double>(i));
    for (int64_t f = 0; f < M; ++f) lanes[f] += w * a[i * lda + f] * b[i * ldb + f];
  }
  double total = 0;
  for (int64_t f = 0; f < M; ++f) total += lanes[f];
  return total;
}

// The rows of q, k and v at positions [start, start + c) of one pair, copied together (C x M,
// C x M, C x Dv): in the tensors they are H M values apart, so a chunk's rows fall into a few
// cache sets and evict each other while its products run.
template <typename T>
struct PackedChunk {
  T *q, *k, *v;
  static int64_t size(const CausalShape& s, int64_t chunk) { return chunk * (2 * s.features + s.value_dim); }
  PackedChunk(const CausalShape& s, int64_t chunk, T* buffer)
      : q(buffer), k(buffer + chunk * s.features), v(buffer + 2 * chunk * s.features) {}
  // Copies the chunk; returns the view of it (rows M and Dv values apart).
  SPE_INLINE Head<T> pack(const CausalShape& s, const Head<T>& x, int64_t start, int64_t c) {
    const int64_t M = s.features, Dv = s.value_dim;
    for (int64_t i = 0; i < c; ++i) {
      std::copy_n(x.q + (start + i) * x.ld_qk, M, q + i * M);
      std::copy_n(x.k + (start + i) * x.ld_qk, M, k + i * M);
      std::copy_n(x.v + (start + i) * x.ld_v, Dv, v + i * Dv);
    }
    return {q, k, v, M, Dv};
  }
};

// Brings the rows of q, k and v at positions [start, start + c) towards the cache, a chunk ahead
// of their copy (rows H M values apart: too far for the hardware prefetcher); none past the end.
template <typename T>
SPE_INLINE void prefetch_chunk(const CausalShape& s, const Head<T>& x, int64_t start, int64_t c) {
  c = std::min(c, s.length - start);
  prefetch_rows(x.q + start * x.ld_qk, c, x.ld_qk, s.features);
  prefetch_rows(x.k + start * x.ld_qk, c, x.ld_qk, s.features);
  prefetch_rows(x.v + start * x.ld_v, c, x.ld_v, s.value_dim);
}

// work: the pair's buffers; scratch: small_gemm's; Tile: its register blocking (vector_ops.h).
template <class Tile, typename T>
SPE_INLINE void forward_pair(const CausalShape& s, const Head<T>& x, const Decay<T>& d, T eps, bool normalize,
                             int64_t chunk, T* out, T* den, std::vector<T>& work, std::vector<T>& scratch) {
  const int64_t M = s.features, Dv = s.value_dim, ld_out = s.heads * Dv, ld_den = s.heads;
  work.assign(M * Dv + M + chunk * chunk + chunk * Dv + PackedChunk<T>::size(s, chunk) + (d.powers ? chunk * M : 0),
              T(0));
  T* state = work.data();          // (M, Dv): sum_n g^(end - n) k_n v_n^T over past chunks (end: their last)
  T* key_sum = state + M * Dv;     // (M):     sum_n g^(end - n) k_n over past chunks
  T* scores = key_sum + M;         // (C, C)
  T* num = scores + chunk * chunk;  // (C, Dv): the chunk's numerators
  PackedChunk<T> p(s, chunk, num + chunk * Dv);
  T* scaled = p.v + chunk * Dv;    // (C, M): the chunk's keys decayed to its end
  for (int64_t start = 0; start < s.length; start += chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const Head<T> cx = p.pack(s, x, start, c);
    prefetch_chunk(s, x, start + chunk, chunk);
    T* oc = out + start * ld_out;
    T* dc = den + start * ld_den;
    // num_c = diag(g^(i + 1)) Q_c state + mask(Q_c K_c^T) V_c, den likewise with key_sum and ones
    small_gemm<Tile>(false, false, c, Dv, M, cx.q, cx.ld_qk, state, Dv, false, num, Dv, scratch);
    for (int i = 0; i < c; ++i) {
      const T d_past = dot<Tile::bytes>(cx.q + i * cx.ld_qk, key_sum, M);
      dc[i * ld_den] = d.powers ? d_past * d.power(i + 1) : d_past;
    }
    scale_rows(d, 1, 1, num, c, Dv, Dv);
    small_gemm<Tile>(false, true, c, c, M, cx.q, cx.ld_qk, cx.k, cx.ld_qk, false, scores, chunk, scratch);
    mask_lower(scores, c, chunk, d, chunk);
    small_gemm<Tile>(false, false, c, Dv, c, scores, chunk, cx.v, cx.ld_v, true, num, Dv, scratch);
    for (int i = 0; i < c; ++i) {
      const T dv = dc[i * ld_den] + dot<Tile::bytes>(scores + i * chunk, static_cast<const T*>(nullptr), i + 1);
      dc[i * ld_den] = dv;
      const T inv = normalize ? T(1) / std::max(dv, eps) : T(1);
      for (int64_t e = 0; e < Dv; ++e) oc[i * ld_out + e] = num[i * Dv + e] * inv;
    }
    // state = g^c state + sum_j g^(c - 1 - j) k_j v_j^T, key_sum likewise
    decay_state(d, c, state, M, Dv, key_sum);
    int64_t ld_keys;
    const T* keys = keys_to_end(d, cx.k, cx.ld_qk, c, M, scaled, ld_keys);
    small_gemm<Tile>(true, false, M, Dv, c, keys, ld_keys, cx.v, cx.ld_v, true, state, Dv, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) key_sum[f] += keys[i * ld_keys + f];
  }
}

// Backward of one (batch, head) pair. With go = grad_out and w(m, n) = g^(m - n) the decay
// (1 without):
//   gn_m = go_m / max(den_m, eps)                 (the gradient of num_m)
//   gd_m = -(go_m . out_m) / den_m if den_m > eps (the gradient of den_m), else 0
//   W[m, n] = (gn_m . v_n + gd_m) w(m, n) for n <= m   (d loss / d (q_m . k_n))
//   grad q_m = sum_{n <= m} W[m, n] k_n,  grad k_n = sum_{m >= n} W[m, n] q_m,
//   grad v_n = sum_{m >= n} w(m, n) (q_m . k_n) gn_m.
// A forward sweep carries the decayed prefix sums for grad q; a backward sweep the suffix sums
// sum_m g^(m - e) q_m gn_m^T and sum_m g^(m - e) gd_m q_m (e: the first position after the
// chunk) for grad k and grad v. Returns d loss / d log g (0 without grad_log_decay). With
// grad_den (the raw sums' backward), grad_out is gn and grad_den gd.
template <class Tile, typename T>
SPE_INLINE double backward_pair(const CausalShape& s, const Head<T>& x, const Decay<T>& d, bool grad_log_decay,
                                const T* out, const T* den, const T* grad_out, const T* grad_den, T eps,
                                int64_t chunk, T* grad_q, T* grad_k, T* grad_v, std::vector<T>& work,
                                std::vector<T>& scratch) {
  const int64_t M = s.features, Dv = s.value_dim, ld_out = s.heads * Dv, ld_den = s.heads;
  work.assign(M * Dv + M + 2 * chunk * chunk + chunk * Dv + chunk + chunk * M + M + PackedChunk<T>::size(s, chunk),
              T(0));
  T* state = work.data();       // (M, Dv)
  T* vector = state + M * Dv;   // (M)
  T* w = vector + M;            // (C, C)
  T* scores = w + chunk * chunk;     // (C, C)
  T* gn = scores + chunk * chunk;    // (C, Dv)
  T* gd = gn + chunk * Dv;           // (C)
  T* scaled = gd + chunk;            // (C, M)
  T* lanes = scaled + chunk * M;     // (M)
  PackedChunk<T> p(s, chunk, lanes + M);
  // d loss / d log g = sum_m (m - centre) (q_m . grad q_m) - sum_n (n - centre) (k_n . grad k_n)
  const double centre = 0.5 * static_cast<double>(s.length - 1);
  double log_decay_grad = 0;

  // gn, gd of chunk [start, start + c) and W = decay mask times (gn V^T + gd 1^T)
  // (inlined, so that it is compiled for the instruction set of the function it is in)
  auto chunk_gradients = [&](int64_t start, int c, const T* vc, int64_t ld_v) __attribute__((always_inline)) {
    for (int i = 0; i < c; ++i) {
      const T* g = grad_out + (start + i) * ld_out;
      if (grad_den) {
        std::copy(g, g + Dv, gn + i * Dv);
        gd[i] = grad_den[(start + i) * ld_den];
        continue;
      }
      const T dn = den[(start + i) * ld_den], clamped = std::max(dn, eps);
      const T* o = out + (start + i) * ld_out;
      for (int64_t e = 0; e < Dv; ++e) gn[i * Dv + e] = g[e] / clamped;
      gd[i] = dn > eps ? -dot<Tile::bytes>(g, o, Dv) / clamped : T(0);
    }
    small_gemm<Tile>(false, true, c, c, Dv, gn, Dv, vc, ld_v, false, w, chunk, scratch);
    for (int i = 0; i < c; ++i)
      for (int j = 0; j <= i; ++j) w[i * chunk + j] += gd[i];
    mask_lower(w, c, chunk, d, chunk);
  };

  // Forward sweep: grad q_c = diag(g^(i + 1)) (gn state^T + gd key_sum^T) + W K_c, state and
  // key_sum over past chunks as in the forward.
  for (int64_t start = 0; start < s.length; start += chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const Head<T> cx = p.pack(s, x, start, c);
    prefetch_chunk(s, x, start + chunk, chunk);
    T* gq = grad_q + start * x.ld_qk;
    chunk_gradients(start, c, cx.v, cx.ld_v);
    small_gemm<Tile>(false, true, c, M, Dv, gn, Dv, state, Dv, false, gq, x.ld_qk, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gq[i * x.ld_qk + f] += gd[i] * vector[f];
    scale_rows(d, 1, 1, gq, c, M, x.ld_qk);
    small_gemm<Tile>(false, false, c, M, c, w, chunk, cx.k, cx.ld_qk, true, gq, x.ld_qk, scratch);
    if (grad_log_decay) log_decay_grad += weighted_row_dots(cx.q, cx.ld_qk, gq, x.ld_qk, c, M, start - centre, lanes);
    decay_state(d, c, state, M, Dv, vector);
    int64_t ld_keys;
    const T* keys = keys_to_end(d, cx.k, cx.ld_qk, c, M, scaled, ld_keys);
    small_gemm<Tile>(true, false, M, Dv, c, keys, ld_keys, cx.v, cx.ld_v, true, state, Dv, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) vector[f] += keys[i * ld_keys + f];
  }

  // Backward sweep: state = sum_m g^(m - e) q_m gn_m^T and vector = sum_m g^(m - e) gd_m q_m
  // over later chunks.
  std::fill(state, state + M * Dv + M, T(0));
  const int64_t last = ((s.length - 1) / chunk) * chunk;
  for (int64_t start = last; start >= 0; start -= chunk) {
    const int c = static_cast<int>(std::min(chunk, s.length - start));
    const Head<T> cx = p.pack(s, x, start, c);
    if (start >= chunk) prefetch_chunk(s, x, start - chunk, chunk);
    T* gk = grad_k + start * x.ld_qk;
    T* gv = grad_v + start * x.ld_v;
    chunk_gradients(start, c, cx.v, cx.ld_v);
    // grad k_c = diag(g^(c - j)) (V_c state^T + 1 vector^T) + W^T Q_c
    small_gemm<Tile>(false, true, c, M, Dv, cx.v, cx.ld_v, state, Dv, false, gk, x.ld_qk, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) gk[i * x.ld_qk + f] += vector[f];
    scale_rows(d, c, -1, gk, c, M, x.ld_qk);
    small_gemm<Tile>(true, false, c, M, c, w, chunk, cx.q, cx.ld_qk, true, gk, x.ld_qk, scratch);
    if (grad_log_decay) log_decay_grad -= weighted_row_dots(cx.k, cx.ld_qk, gk, x.ld_qk, c, M, start - centre, lanes);
    // grad v_c = diag(g^(c - j)) K_c state + mask(Q_c K_c^T)^T gn
    small_gemm<Tile>(false, false, c, Dv, M, cx.k, cx.ld_qk, state, Dv, false, gv, x.ld_v, scratch);
    scale_rows(d, c, -1, gv, c, Dv, x.ld_v);
    small_gemm<Tile>(false, true, c, c, M, cx.q, cx.ld_qk, cx.k, cx.ld_qk, false, scores, chunk, scratch);
    mask_lower(scores, c, chunk, d, chunk);
    small_gemm<Tile>(true, false, c, Dv, c, scores, chunk, gn, Dv, true, gv, x.ld_v, scratch);
    // state = g^c state + sum_i g^i q_i gn_i^T, vector likewise (gn, gd are not needed after)
    decay_state(d, c, state, M, Dv, vector);
    scale_rows(d, 0, 1, gn, c, Dv, Dv);
    scale_rows(d, 0, 1, gd, c, 1, 1);
    small_gemm<Tile>(true, false, M, Dv, c, cx.q, cx.ld_qk, gn, Dv, true, state, Dv, scratch);
    for (int i = 0; i < c; ++i)
      for (int64_t f = 0; f < M; ++f) vector[f] += gd[i] * cx.q[i * cx.ld_qk + f];
  }
  return log_decay_grad;
}

// The arguments of the whole forward and backward.
template <typename T>
struct ForwardArgs {
  const CausalShape& s;
  const T *q, *k, *v, *log_decay;
  T eps;
  bool normalize;
  int64_t chunk;
  T *out, *den;
};
template <typename T>
struct BackwardArgs {
  const CausalShape& s;
  const T *q, *k, *v, *log_decay, *out, *den, *grad_out, *grad_den;
  T eps;
  int64_t chunk;
  T *grad_q, *grad_k, *grad_v, *grad_log_decay;
};

// The (batch, head) pairs [begin, end) of one thread.
template <class Tile, typename T>
SPE_INLINE void forward_pairs(const ForwardArgs<T>& a, int64_t begin, int64_t end) {
  const CausalShape& s = a.s;
  std::vector<T> work, scratch, tables;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / s.heads, h = pair % s.heads;
    const Decay<T> d = decay_tables(a.log_decay ? a.log_decay + h : nullptr, a.chunk, tables);
    forward_pair<Tile>(s, head_view(s, a.q, a.k, a.v, pair), d, a.eps, a.normalize, a.chunk,
                       a.out + (b * s.length * s.heads + h) * s.value_dim, a.den + b * s.length * s.heads + h, work,
                       scratch);
  }
}

template <class Tile, typename T>
SPE_INLINE void backward_pairs(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
  const CausalShape& s = a.s;
  std::vector<T> work, scratch, tables;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t b = pair / s.heads, h = pair % s.heads;
    const int64_t qk = (b * s.length * s.heads + h) * s.features;
    const int64_t vo = (b * s.length * s.heads + h) * s.value_dim;
    const Decay<T> d = decay_tables(a.log_decay ? a.log_decay + h : nullptr, a.chunk, tables);
    const bool grad_log_decay = a.grad_log_decay != nullptr && d.powers != nullptr;
    const int64_t den_offset = b * s.length * s.heads + h;
    const double log_decay_grad = backward_pair<Tile>(
        s, head_view(s, a.q, a.k, a.v, pair), d, grad_log_decay, a.out ? a.out + vo : nullptr,
        a.den ? a.den + den_offset : nullptr, a.grad_out + vo, a.grad_den ? a.grad_den + den_offset : nullptr, a.eps,
        a.chunk, a.grad_q + qk, a.grad_k + qk, a.grad_v + vo, work, scratch);
    if (grad_log_decay) a.grad_log_decay[pair] = static_cast<T>(log_decay_grad);
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
void causal_linear_attention_forward(const CausalShape& s, const T* q, const T* k, const T* v, const T* log_decay,
                                     T eps, int64_t chunk, T* out, T* den, bool normalize) {
  const ForwardArgs<T> args{s, q, k, v, log_decay, eps, normalize, chunk, out, den};
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<ForwardPairs>(isa, args, begin, end); });
}

template <typename T>
void causal_linear_attention_backward(const CausalShape& s, const T* q, const T* k, const T* v, const T* log_decay,
                                      const T* out, const T* den, const T* grad_out, T eps, int64_t chunk, T* grad_q,
                                      T* grad_k, T* grad_v, T* grad_log_decay, const T* grad_den) {
  const BackwardArgs<T> args{s,     q,      k,      v,      log_decay,     out, den, grad_out, grad_den,
                             eps,   chunk,  grad_q, grad_k, grad_v,        grad_log_decay};
  const Isa isa = best_isa();
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<BackwardPairs>(isa, args, begin, end); });
}

#define SPE_INSTANTIATE(T)                                                                                   \
  template void causal_linear_attention_forward<T>(const CausalShape&, const T*, const T*, const T*, const T*, \
                                                   T, int64_t, T*, T*, bool);                                \
  template void causal_linear_attention_backward<T>(const CausalShape&, const T*, const T*, const T*,        \
                                                    const T*, const T*, const T*, const T*, T, int64_t, T*,  \
                                                    T*, T*, T*, const T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
