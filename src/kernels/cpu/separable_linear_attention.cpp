#include "kernels/cpu/separable_linear_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

// Positions per tile: a tile of psi and its gradient (64 x M J, 45 KB each at M J = 176 in
// float32) stay in L2 while their products run.
constexpr int64_t kTile = 64;

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

// psi (t x M J) at positions [start, start + t): psi[i, d J + j] = phi[i, d] c[i, d, j].
template <typename T>
SPE_INLINE void build_tile(const Side<T>& x, int64_t M, int64_t J, int64_t start, int64_t t, T* psi) {
  for (int64_t i = 0; i < t; ++i) {
    const T* phi = x.phi + (start + i) * x.ld_phi;
    const T* c = x.coef + (start + i) * x.ld_coef;
    T* row = psi + i * M * J;
    for (int64_t d = 0; d < M; ++d)
      for (int64_t j = 0; j < J; ++j) row[d * J + j] = phi[d] * c[d * J + j];
  }
}

// From d loss / d psi of a tile (t x M J): d phi[i, d] = sum_j d psi[i, d J + j] c[i, d, j] (written;
// grad_phi laid out as phi) and d c[i, d, j] += phi[i, d] d psi[i, d J + j] (added: every batch
// entry adds to it; grad_coef laid out as coef).
template <typename T>
SPE_INLINE void scatter_tile_gradient(const Side<T>& x, int64_t M, int64_t J, int64_t start, int64_t t,
                                      const T* grad_psi, T* grad_phi, T* grad_coef) {
  for (int64_t i = 0; i < t; ++i) {
    const int64_t n = start + i;
    const T* phi = x.phi + n * x.ld_phi;
    const T* c = x.coef + n * x.ld_coef;
    const T* g = grad_psi + i * M * J;
    T* gc = grad_coef + n * x.ld_coef;
    for (int64_t d = 0; d < M; ++d) {
      T sum = 0;
      for (int64_t j = 0; j < J; ++j) {
        sum += g[d * J + j] * c[d * J + j];
        gc[d * J + j] += phi[d] * g[d * J + j];
      }
      grad_phi[n * x.ld_phi + d] = sum;
    }
  }
}

template <typename T>
struct ForwardArgs {
  const SeparableShape& s;
  const T *phi_q, *phi_k, *v, *c_q, *c_k;
  T *out, *kv;
};
template <typename T>
struct BackwardArgs {
  const SeparableShape& s;
  const T *phi_q, *phi_k, *v, *c_q, *c_k, *kv, *grad_out;
  T *grad_phi_q, *grad_phi_k, *grad_v, *grad_c_q, *grad_c_k;
};

// kv = sum_m psi_k_m v_m^T, then out_n = kv^T psi_q_n, one tile of psi at a time.
template <class Tile, typename T>
SPE_INLINE void forward_pair(const ForwardArgs<T>& a, int64_t b, int64_t h, std::vector<T>& psi,
                             std::vector<T>& scratch) {
  const SeparableShape& s = a.s;
  const int64_t M = s.features, J = s.coefficients, F = M * J, Dv = s.value_dim, ld_v = s.heads * Dv;
  const Side<T> q = side_of(s, a.phi_q, a.c_q, s.queries, b, h), k = side_of(s, a.phi_k, a.c_k, s.keys, b, h);
  const T* v = a.v + pair_offset(s, s.keys, b, h, Dv);
  T* out = a.out + pair_offset(s, s.queries, b, h, Dv);
  T* kv = a.kv + (b * s.heads + h) * F * Dv;
  std::fill(kv, kv + F * Dv, T(0));
  for (int64_t start = 0; start < k.length; start += kTile) {
    const int64_t t = std::min(kTile, k.length - start);
    build_tile(k, M, J, start, t, psi.data());
    small_gemm<Tile>(true, false, F, Dv, t, psi.data(), F, v + start * ld_v, ld_v, true, kv, Dv, scratch);
  }
  for (int64_t start = 0; start < q.length; start += kTile) {
    const int64_t t = std::min(kTile, q.length - start);
    build_tile(q, M, J, start, t, psi.data());
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
  const Side<T> q = side_of(s, a.phi_q, a.c_q, s.queries, b, h), k = side_of(s, a.phi_k, a.c_k, s.keys, b, h);
  const int64_t q_rows = pair_offset(s, s.queries, b, h, M), k_rows = pair_offset(s, s.keys, b, h, M);
  const T* g = a.grad_out + pair_offset(s, s.queries, b, h, Dv);
  const T* v = a.v + pair_offset(s, s.keys, b, h, Dv);
  T* grad_v = a.grad_v + pair_offset(s, s.keys, b, h, Dv);
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
    build_tile(q, M, J, start, t, psi);
    small_gemm<Tile>(true, false, F, Dv, t, psi, F, g + start * ld_v, ld_v, true, grad_kv, Dv, scratch);
    small_gemm<Tile>(false, false, t, F, Dv, g + start * ld_v, ld_v, kv_t, F, false, grad_psi, F, scratch);
    scatter_tile_gradient(q, M, J, start, t, grad_psi, a.grad_phi_q + q_rows, grad_c_q);
  }
  transpose<Bytes>(F, Dv, grad_kv, Dv, grad_kv_t, F);
  for (int64_t start = 0; start < k.length; start += kTile) {
    const int64_t t = std::min(kTile, k.length - start);
    build_tile(k, M, J, start, t, psi);
    small_gemm<Tile>(false, false, t, F, Dv, v + start * ld_v, ld_v, grad_kv_t, F, false, grad_psi, F, scratch);
    small_gemm<Tile>(false, false, t, Dv, F, psi, F, grad_kv, Dv, false, grad_v + start * ld_v, ld_v, scratch);
    scatter_tile_gradient(k, M, J, start, t, grad_psi, a.grad_phi_k + k_rows, grad_c_k);
  }
}

// The kernels for run_for_isa (dispatch.h): the forward over (batch, head) pairs; the backward
// over heads, each with its whole batch, since the batch sums into the coefficients' gradients.
struct ForwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const ForwardArgs<T>& a, int64_t begin, int64_t end) {
    std::vector<T> psi(static_cast<size_t>(kTile * a.s.features * a.s.coefficients)), scratch;
    for (int64_t pair = begin; pair < end; ++pair)
      forward_pair<Tile>(a, pair / a.s.heads, pair % a.s.heads, psi, scratch);
  }
};
struct BackwardHeads {
  template <class Tile, typename T>
  static SPE_INLINE void run(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
    std::vector<T> work, scratch;
    for (int64_t h = begin; h < end; ++h)
      for (int64_t b = 0; b < a.s.batch; ++b) backward_pair<Tile>(a, b, h, work, scratch);
  }
};

}  // namespace

template <typename T>
void separable_linear_numerator_forward(const SeparableShape& s, const T* phi_q, const T* phi_k, const T* v,
                                        const T* c_q, const T* c_k, T* out, T* kv) {
  const ForwardArgs<T> args{s, phi_q, phi_k, v, c_q, c_k, out, kv};
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, s.batch * s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<ForwardPairs>(isa, args, begin, end); });
}

template <typename T>
void separable_linear_numerator_backward(const SeparableShape& s, const T* phi_q, const T* phi_k, const T* v,
                                         const T* c_q, const T* c_k, const T* kv, const T* grad_out, T* grad_phi_q,
                                         T* grad_phi_k, T* grad_v, T* grad_c_q, T* grad_c_k) {
  const BackwardArgs<T> args{s, phi_q, phi_k, v, c_q, c_k, kv, grad_out, grad_phi_q, grad_phi_k, grad_v, grad_c_q,
                             grad_c_k};
  const Isa isa = best_isa();
  at::parallel_for(0, s.heads, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<BackwardHeads>(isa, args, begin, end); });
}

#define SPE_INSTANTIATE(T)                                                                                        \
  template void separable_linear_numerator_forward<T>(const SeparableShape&, const T*, const T*, const T*,        \
                                                      const T*, const T*, T*, T*);                                \
  template void separable_linear_numerator_backward<T>(const SeparableShape&, const T*, const T*, const T*,       \
                                                       const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
