#include "kernels/cpu/separable_linear_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

// Positions per tile: a tile of psi and its gradient (64 x M J, 45 KB each at M J = 176 in
// float32) stay in L2 while their products run.
constexpr int64_t kTile = 64;
// Positions per chunk of the causal form: its masked C x C scores cost C M J per position on top
// of the 2 M J Dv of the carried state, so the chunk is kept smaller.
constexpr int64_t kCausalChunk = 32;

// One side (queries or keys) of one (batch, head) pair: position n's rows of phi and c.
template <typename T>
struct Side {
  const T* phi;   // row n at phi + n * ld_phi (M values)
  const T* coef;  // row n at coef + n * ld_coef (M J values)
  int64_t length, ld_phi, ld_coef;
};

template <typename T>
Side<T> side_of(const SeparableShape& s, const T* phi, const T* coef, int64_t length, int64_t b, int64_t h) {
  const int64_t M = s.features, J = s.coefficients;
  return {phi + (b * length * s.heads + h) * M, coef + h * M * J, length, s.heads * M, s.heads * M * J};
}

// The offset of a pair's first row in a (B, N, H, X) tensor.
inline int64_t pair_offset(const SeparableShape& s, int64_t length, int64_t b, int64_t h, int64_t width) {
  return (b * length * s.heads + h) * width;
}

// Feature d's J values in a row of M J are handled as the vectors of W lanes at d J + o, o = 0, W,
// ... < J, the last one partial (its lanes past J belong to feature d + 1), for the features whose
// vectors stay inside the row: 0 .. (this count) - 1; the others value by value.
inline int64_t vector_features(int64_t M, int64_t J, int64_t W) {
  const int64_t span = (J + W - 1) / W * W;
  return M * J >= span ? (M * J - span) / J + 1 : 0;
}

// psi (t x M J) at positions [start, start + t): psi[i, d J + j] = phi[i, d] c[i, d, j]. A vector
// feature's lanes past d J + J are overwritten by feature d + 1 (ascending d).
template <class Tile, typename T>
SPE_INLINE void build_tile(const Side<T>& x, int64_t M, int64_t J, int64_t start, int64_t t, T* psi) {
  constexpr int Bytes = Tile::bytes;
  constexpr int64_t W = kLanes<T, Bytes>;
  const int64_t F = M * J, vector_features = cpu::vector_features(M, J, W);
  for (int64_t i = 0; i < t; ++i) {
    const T* phi = x.phi + (start + i) * x.ld_phi;
    const T* c = x.coef + (start + i) * x.ld_coef;
    T* row = psi + i * F;
    for (int64_t d = 0; d < vector_features; ++d)
      for (int64_t o = 0; o < J; o += W) store(row + d * J + o, load<Bytes>(c + d * J + o) * phi[d]);
    for (int64_t d = vector_features; d < M; ++d)
      for (int64_t j = 0; j < J; ++j) row[d * J + j] = phi[d] * c[d * J + j];
  }
}

// From d loss / d psi of a tile (t x M J): d phi[i, d] = sum_j d psi[i, d J + j] c[i, d, j] (written;
// grad_phi laid out as phi) and d c[i, d, j] += phi[i, d] d psi[i, d J + j] (added: every batch
// entry adds to it; grad_coef laid out as coef).
// The lanes of a vector feature's partial vector past J are selected out (to 0, whatever they
// hold): they add 0 to d c and d phi, and the values they load from d c (feature d + 1's) are
// stored back unchanged before feature d + 1 reads them.
template <class Tile, typename T>
SPE_INLINE void scatter_tile_gradient(const Side<T>& x, int64_t M, int64_t J, int64_t start, int64_t t,
                                      const T* grad_psi, T* grad_phi, T* grad_coef) {
  constexpr int Bytes = Tile::bytes;
  constexpr int64_t W = kLanes<T, Bytes>;
  const int64_t vector_features = cpu::vector_features(M, J, W);
  using Bits = Vec<std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>, Bytes>;
  Bits full{}, last{};  // all bits set in every lane, in the lanes of the last vector below J
  for (int64_t l = 0; l < W; ++l) {
    full[l] = ~full[l];
    if (l < J - (J - 1) / W * W) last[l] = ~last[l];
  }
  auto lanes_of = [](const T* p, const Bits& keep) {  // the vector at p, the lanes outside keep zeroed
    Bits bits;
    const Vec<T, Bytes> v = load<Bytes>(p);
    std::memcpy(&bits, &v, sizeof bits);
    bits &= keep;
    Vec<T, Bytes> kept;
    std::memcpy(&kept, &bits, sizeof kept);
    return kept;
  };
  for (int64_t i = 0; i < t; ++i) {
    const int64_t n = start + i;
    const T* phi = x.phi + n * x.ld_phi;
    const T* c = x.coef + n * x.ld_coef;
    const T* g = grad_psi + i * M * J;
    T* gc = grad_coef + n * x.ld_coef;
    for (int64_t d = 0; d < vector_features; ++d) {
      Vec<T, Bytes> sums{};
      for (int64_t o = 0; o < J; o += W) {
        const int64_t at = d * J + o;
        const Vec<T, Bytes> gd = lanes_of(g + at, o + W <= J ? full : last);
        sums += gd * load<Bytes>(c + at);
        store(gc + at, load<Bytes>(gc + at) + gd * phi[d]);
      }
      grad_phi[n * x.ld_phi + d] = lane_sum(sums);
    }
    for (int64_t d = vector_features; d < M; ++d) {
      T sum = 0;
      for (int64_t j = 0; j < J; ++j) {
        sum += g[d * J + j] * c[d * J + j];
        gc[d * J + j] += phi[d] * g[d * J + j];
      }
      grad_phi[n * x.ld_phi + d] = sum;
    }
  }
}

// Zeroes the entries of a t x t block (row stride ld) above its diagonal: key m after query n.
template <typename T>
SPE_INLINE void keep_lower_triangle(T* a, int64_t t, int64_t ld) {
  for (int64_t i = 0; i < t; ++i) std::fill(a + i * ld + i + 1, a + i * ld + t, T(0));
}

template <typename T>
struct ForwardArgs {
  const SeparableShape& s;
  bool causal;
  const T *phi_q, *phi_k, *v, *c_q, *c_k;
  T *out, *kv;  // kv: non-causal only
};
template <typename T>
struct BackwardArgs {
  const SeparableShape& s;
  bool causal;
  const T *phi_q, *phi_k, *v, *c_q, *c_k, *kv, *grad_out;
  T *grad_phi_q, *grad_phi_k, *grad_v, *grad_c_q, *grad_c_k;
};

// One (batch, head) pair's rows in every tensor.
template <typename T>
struct PairRows {
  Side<T> q, k;
  int64_t q_rows, k_rows;  // the first row of phi_q, phi_k (and their gradients)
  int64_t q_values, k_values;  // the first row of out and grad_out, of v and grad_v
};
template <typename T>
PairRows<T> pair_rows(const SeparableShape& s, const T* phi_q, const T* phi_k, const T* c_q, const T* c_k, int64_t b,
                      int64_t h) {
  return {side_of(s, phi_q, c_q, s.queries, b, h), side_of(s, phi_k, c_k, s.keys, b, h),
          pair_offset(s, s.queries, b, h, s.features), pair_offset(s, s.keys, b, h, s.features),
          pair_offset(s, s.queries, b, h, s.value_dim), pair_offset(s, s.keys, b, h, s.value_dim)};
}

// Causal (Nq = Nk = N), by chunks of C positions: out_c = psi_q_c S + tril(psi_q_c psi_k_c^T) v_c,
// S = sum of psi_k_m v_m^T over the chunks before (M J x Dv, carried).
template <class Tile, typename T>
SPE_INLINE void causal_forward_pair(const ForwardArgs<T>& a, int64_t b, int64_t h, std::vector<T>& work,
                                    std::vector<T>& scratch) {
  const SeparableShape& s = a.s;
  const int64_t M = s.features, J = s.coefficients, F = M * J, Dv = s.value_dim, ld_v = s.heads * Dv;
  constexpr int64_t C = kCausalChunk;
  const PairRows<T> p = pair_rows(s, a.phi_q, a.phi_k, a.c_q, a.c_k, b, h);
  const T* v = a.v + p.k_values;
  T* out = a.out + p.q_values;
  work.assign(static_cast<size_t>(2 * C * F + C * C + F * Dv), T(0));
  T *psi_q = work.data(), *psi_k = psi_q + C * F, *scores = psi_k + C * F, *state = scores + C * C;
  for (int64_t start = 0; start < s.queries; start += C) {
    const int64_t t = std::min(C, s.queries - start);
    build_tile<Tile>(p.q, M, J, start, t, psi_q);
    build_tile<Tile>(p.k, M, J, start, t, psi_k);
    const T* vc = v + start * ld_v;
    T* oc = out + start * ld_v;
    small_gemm<Tile>(false, false, t, Dv, F, psi_q, F, state, Dv, false, oc, ld_v, scratch);
    small_gemm<Tile>(false, true, t, t, F, psi_q, F, psi_k, F, false, scores, C, scratch);
    keep_lower_triangle(scores, t, C);
    small_gemm<Tile>(false, false, t, Dv, t, scores, C, vc, ld_v, true, oc, ld_v, scratch);
    small_gemm<Tile>(true, false, F, Dv, t, psi_k, F, vc, ld_v, true, state, Dv, scratch);
  }
}

// Given g = d loss / d out, causal. A first sweep carries S forward for the queries' gradients,
// d psi_q_c = g_c S^T + tril(g_c v_c^T) psi_k_c; a second, from the last chunk back, carries
// R = sum of psi_q_n g_n^T over the chunks after, for d psi_k_c = tril(g_c v_c^T)^T psi_q_c + v_c R^T
// and d v_c = tril(psi_q_c psi_k_c^T)^T g_c + psi_k_c R.
template <class Tile, typename T>
SPE_INLINE void causal_backward_pair(const BackwardArgs<T>& a, int64_t b, int64_t h, std::vector<T>& work,
                                     std::vector<T>& scratch) {
  const SeparableShape& s = a.s;
  const int64_t M = s.features, J = s.coefficients, F = M * J, Dv = s.value_dim, ld_v = s.heads * Dv;
  constexpr int64_t C = kCausalChunk;
  const PairRows<T> p = pair_rows(s, a.phi_q, a.phi_k, a.c_q, a.c_k, b, h);
  const T *v = a.v + p.k_values, *g = a.grad_out + p.q_values;
  T* grad_v = a.grad_v + p.k_values;
  work.assign(static_cast<size_t>(3 * C * F + 2 * C * C + F * Dv), T(0));
  T *psi_q = work.data(), *psi_k = psi_q + C * F, *grad_psi = psi_k + C * F;
  T *grad_scores = grad_psi + C * F, *scores = grad_scores + C * C, *state = scores + C * C;
  auto chunk_at = [&](int64_t start) {  // builds the chunk's psi and tril(g_c v_c^T); returns its length
    const int64_t t = std::min(C, s.queries - start);
    build_tile<Tile>(p.q, M, J, start, t, psi_q);
    build_tile<Tile>(p.k, M, J, start, t, psi_k);
    small_gemm<Tile>(false, true, t, t, Dv, g + start * ld_v, ld_v, v + start * ld_v, ld_v, false, grad_scores, C,
                     scratch);
    keep_lower_triangle(grad_scores, t, C);
    return t;
  };
  for (int64_t start = 0; start < s.queries; start += C) {
    const int64_t t = chunk_at(start);
    small_gemm<Tile>(false, true, t, F, Dv, g + start * ld_v, ld_v, state, Dv, false, grad_psi, F, scratch);
    small_gemm<Tile>(false, false, t, F, t, grad_scores, C, psi_k, F, true, grad_psi, F, scratch);
    scatter_tile_gradient<Tile>(p.q, M, J, start, t, grad_psi, a.grad_phi_q + p.q_rows, a.grad_c_q + h * F);
    small_gemm<Tile>(true, false, F, Dv, t, psi_k, F, v + start * ld_v, ld_v, true, state, Dv, scratch);
  }
  std::fill(state, state + F * Dv, T(0));  // now R
  for (int64_t start = (s.queries - 1) / C * C; start >= 0; start -= C) {
    const int64_t t = chunk_at(start);
    const T *vc = v + start * ld_v, *gc = g + start * ld_v;
    small_gemm<Tile>(true, false, t, F, t, grad_scores, C, psi_q, F, false, grad_psi, F, scratch);
    small_gemm<Tile>(false, true, t, F, Dv, vc, ld_v, state, Dv, true, grad_psi, F, scratch);
    small_gemm<Tile>(false, true, t, t, F, psi_q, F, psi_k, F, false, scores, C, scratch);
    keep_lower_triangle(scores, t, C);
    small_gemm<Tile>(true, false, t, Dv, t, scores, C, gc, ld_v, false, grad_v + start * ld_v, ld_v, scratch);
    small_gemm<Tile>(false, false, t, Dv, F, psi_k, F, state, Dv, true, grad_v + start * ld_v, ld_v, scratch);
    scatter_tile_gradient<Tile>(p.k, M, J, start, t, grad_psi, a.grad_phi_k + p.k_rows, a.grad_c_k + h * F);
    small_gemm<Tile>(true, false, F, Dv, t, psi_q, F, gc, ld_v, true, state, Dv, scratch);
  }
}

// kv = sum_m psi_k_m v_m^T, then out_n = kv^T psi_q_n, one tile of psi at a time.
template <class Tile, typename T>
SPE_INLINE void forward_pair(const ForwardArgs<T>& a, int64_t b, int64_t h, std::vector<T>& psi,
                             std::vector<T>& scratch) {
  const SeparableShape& s = a.s;
  const int64_t M = s.features, J = s.coefficients, F = M * J, Dv = s.value_dim, ld_v = s.heads * Dv;
  const PairRows<T> p = pair_rows(s, a.phi_q, a.phi_k, a.c_q, a.c_k, b, h);
  const Side<T> &q = p.q, &k = p.k;
  const T* v = a.v + p.k_values;
  T* out = a.out + p.q_values;
  T* kv = a.kv + (b * s.heads + h) * F * Dv;
  std::fill(kv, kv + F * Dv, T(0));
  for (int64_t start = 0; start < k.length; start += kTile) {
    const int64_t t = std::min(kTile, k.length - start);
    build_tile<Tile>(k, M, J, start, t, psi.data());
    small_gemm<Tile>(true, false, F, Dv, t, psi.data(), F, v + start * ld_v, ld_v, true, kv, Dv, scratch);
  }
  for (int64_t start = 0; start < q.length; start += kTile) {
    const int64_t t = std::min(kTile, q.length - start);
    build_tile<Tile>(q, M, J, start, t, psi.data());
    small_gemm<Tile>(false, false, t, Dv, F, psi.data(), F, kv, Dv, false, out + start * ld_v, ld_v, scratch);
  }
}

// Given g = d loss / d out: d kv = sum_n psi_q_n g_n^T, d psi_q_n = kv g_n, d psi_k_m = d kv v_m,
// d v_m = d kv^T psi_k_m; the gradients of psi go to phi and c (scatter_tile_gradient).
template <class Tile, typename T>
SPE_INLINE void backward_pair(const BackwardArgs<T>& a, int64_t b, int64_t h, std::vector<T>& work,
                              std::vector<T>& scratch) {
  const SeparableShape& s = a.s;
  const int64_t M = s.features, J = s.coefficients, F = M * J, Dv = s.value_dim, ld_v = s.heads * Dv;
  const PairRows<T> p = pair_rows(s, a.phi_q, a.phi_k, a.c_q, a.c_k, b, h);
  const Side<T> &q = p.q, &k = p.k;
  const T *g = a.grad_out + p.q_values, *v = a.v + p.k_values;
  T* grad_v = a.grad_v + p.k_values;
  T* grad_c_q = a.grad_c_q + h * F;
  T* grad_c_k = a.grad_c_k + h * F;
  work.resize(static_cast<size_t>(2 * kTile * F + 3 * F * Dv));
  T* psi = work.data();               // (T, F)
  T* grad_psi = psi + kTile * F;      // (T, F)
  T* grad_kv = grad_psi + kTile * F;  // (F, Dv)
  T* kv_t = grad_kv + F * Dv;         // (Dv, F): kv, then d kv, transposed
  T* grad_kv_t = kv_t + F * Dv;
  constexpr int Bytes = Tile::bytes;
  transpose<Bytes>(F, Dv, a.kv + (b * s.heads + h) * F * Dv, Dv, kv_t, F);
  std::fill(grad_kv, grad_kv + F * Dv, T(0));
  for (int64_t start = 0; start < q.length; start += kTile) {
    const int64_t t = std::min(kTile, q.length - start);
    build_tile<Tile>(q, M, J, start, t, psi);
    small_gemm<Tile>(true, false, F, Dv, t, psi, F, g + start * ld_v, ld_v, true, grad_kv, Dv, scratch);
    small_gemm<Tile>(false, false, t, F, Dv, g + start * ld_v, ld_v, kv_t, F, false, grad_psi, F, scratch);
    scatter_tile_gradient<Tile>(q, M, J, start, t, grad_psi, a.grad_phi_q + p.q_rows, grad_c_q);
  }
  transpose<Bytes>(F, Dv, grad_kv, Dv, grad_kv_t, F);
  for (int64_t start = 0; start < k.length; start += kTile) {
    const int64_t t = std::min(kTile, k.length - start);
    build_tile<Tile>(k, M, J, start, t, psi);
    small_gemm<Tile>(false, false, t, F, Dv, v + start * ld_v, ld_v, grad_kv_t, F, false, grad_psi, F, scratch);
    small_gemm<Tile>(false, false, t, Dv, F, psi, F, grad_kv, Dv, false, grad_v + start * ld_v, ld_v, scratch);
    scatter_tile_gradient<Tile>(k, M, J, start, t, grad_psi, a.grad_phi_k + p.k_rows, grad_c_k);
  }
}

// The kernels for run_for_isa (dispatch.h): the forward over (batch, head) pairs; the backward
// over heads, each with its whole batch, since the batch sums into the coefficients' gradients.
struct ForwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const ForwardArgs<T>& a, int64_t begin, int64_t end) {
    std::vector<T> work(static_cast<size_t>(kTile * a.s.features * a.s.coefficients)), scratch;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t b = pair / a.s.heads, h = pair % a.s.heads;
      if (a.causal)
        causal_forward_pair<Tile>(a, b, h, work, scratch);
      else
        forward_pair<Tile>(a, b, h, work, scratch);
    }
  }
};
struct BackwardHeads {
  template <class Tile, typename T>
  static SPE_INLINE void run(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
    std::vector<T> work, scratch;
    for (int64_t h = begin; h < end; ++h)
      for (int64_t b = 0; b < a.s.batch; ++b) {
        if (a.causal)
          causal_backward_pair<Tile>(a, b, h, work, scratch);
        else
          backward_pair<Tile>(a, b, h, work, scratch);
      }
  }
};

}  // namespace

template <typename T>
void separable_linear_numerator_forward(const SeparableShape& s, bool causal, const T* phi_q, const T* phi_k,
                                        const T* v, const T* c_q, const T* c_k, T* out, T* kv) {
  const ForwardArgs<T> args{s, causal, phi_q, phi_k, v, c_q, c_k, out, kv};
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<ForwardPairs>(isa, args, begin, end); });
}

template <typename T>
void separable_linear_numerator_backward(const SeparableShape& s, bool causal, const T* phi_q, const T* phi_k,
                                         const T* v, const T* c_q, const T* c_k, const T* kv, const T* grad_out,
                                         T* grad_phi_q, T* grad_phi_k, T* grad_v, T* grad_c_q, T* grad_c_k) {
  const BackwardArgs<T> args{s,        causal,     phi_q,      phi_k,  v,        c_q,     c_k,
                             kv,       grad_out,   grad_phi_q, grad_phi_k, grad_v, grad_c_q, grad_c_k};
  const Isa isa = best_isa();
  at::parallel_for(0, s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<BackwardHeads>(isa, args, begin, end); });
}

#define SPE_INSTANTIATE(T)                                                                                        \
  template void separable_linear_numerator_forward<T>(const SeparableShape&, bool, const T*, const T*, const T*,  \
                                                      const T*, const T*, T*, T*);                                \
  template void separable_linear_numerator_backward<T>(const SeparableShape&, bool, const T*, const T*, const T*, \
                                                       const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
