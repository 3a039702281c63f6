#include "sine_spe_filter.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "isa.h"
#include "vector_ops.h"

namespace spe::kernels::cpu {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr int64_t kResync = 64;  // positions between exact evaluations of the oscillators
constexpr int64_t kTile = 16;    // positions whose codes (and gradients) are built together

// cos/sin of 2 pi f n + theta for consecutive n by complex rotation, re-evaluated exactly every
// kResync steps so that rounding does not accumulate.
struct Oscillators {
  const double* f;
  const double* theta;
  int64_t count;
  std::vector<double> cos_now, sin_now, cos_step, sin_step;

  Oscillators(const double* frequencies, const double* phases, int64_t n)
      : f(frequencies), theta(phases), count(n), cos_now(n), sin_now(n) {}
  void set(int64_t position) {
    for (int64_t i = 0; i < count; ++i) {
      const double phase = kTwoPi * f[i] * static_cast<double>(position) + theta[i];
      cos_now[i] = std::cos(phase);
      sin_now[i] = std::sin(phase);
    }
  }
  // Moves to `position`, the step after the previous one unless steps_since_set is 0.
  void advance(int64_t position, int64_t steps_since_set) {
    if (steps_since_set % kResync == 0) return set(position);
    if (cos_step.empty()) {  // the rotation by one position, computed on first use
      cos_step.resize(count);
      sin_step.resize(count);
      for (int64_t i = 0; i < count; ++i) {
        cos_step[i] = std::cos(kTwoPi * f[i]);
        sin_step[i] = std::sin(kTwoPi * f[i]);
      }
    }
    for (int64_t i = 0; i < count; ++i) {
      const double c = cos_now[i] * cos_step[i] - sin_now[i] * sin_step[i];
      sin_now[i] = sin_now[i] * cos_step[i] + cos_now[i] * sin_step[i];
      cos_now[i] = c;
    }
  }
};

// A slice of work: head h, positions [begin, end) of the sequence.
struct Block {
  int64_t head, begin, end;
};

std::vector<Block> blocks_of(const SineFilterShape& s) {
  const int64_t threads = at::get_num_threads();
  const int64_t per_head = std::max<int64_t>(1, std::min<int64_t>(s.length, (2 * threads + s.heads - 1) / s.heads));
  std::vector<Block> blocks;
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < per_head; ++i) blocks.push_back({h, s.length * i / per_head, s.length * (i + 1) / per_head});
  return blocks;
}

// One head's code parameters, the gate's scale folded into the weights: the code of feature d
// at position n is c_d + Omega(n) (a_d W_d).
template <typename T>
struct HeadCode {
  std::vector<T> scaled_weights;  // (D, 2K, R): a_d W_d
  const T* shift;                 // c (D, R)
  HeadCode(const SineFilterShape& s, int64_t h, const T* weights, const T* gate_scale, const T* gate_shift)
      : scaled_weights(s.dim * 2 * s.sines * s.realizations), shift(gate_shift + h * s.dim * s.realizations) {
    const int64_t per_d = 2 * s.sines * s.realizations;
    const T* w = weights + h * s.dim * per_d;
    for (int64_t d = 0; d < s.dim; ++d)
      for (int64_t i = 0; i < per_d; ++i) scaled_weights[d * per_d + i] = gate_scale[h * s.dim + d] * w[d * per_d + i];
  }
};

// Advances the oscillators over the `count` positions from n (the block began at blk.begin) and
// keeps their values: omega (count, D K, 2) = (cos, sin).
SPE_INLINE void sample_oscillators(Oscillators& osc, const SineFilterShape& s, const Block& blk, int64_t n,
                                   int64_t count, double* omega) {
  for (int64_t t = 0; t < count; ++t) {
    osc.advance(s.first_position + n + t, n + t - blk.begin);
    for (int64_t i = 0; i < osc.count; ++i) {
      omega[(t * osc.count + i) * 2] = osc.cos_now[i];
      omega[(t * osc.count + i) * 2 + 1] = osc.sin_now[i];
    }
  }
}

// Positions kept together (codes, gradients of codes: D x R each) are this many values apart: one
// cache line more than D R, so that the rows of one d at successive positions do not all fall in
// the same cache set (D R floats are 16 KB at D = R = 64).
int64_t position_stride(const SineFilterShape& s) { return s.dim * s.realizations + 16; }

// The codes (count, D, R) of `count` positions (position_stride apart) from their omega
// (count, D K, 2): the first 2K of each row of coeffs (count, D, columns) get Omega(t) of each d,
// then for each d, code_d (count x R) = c_d + coeffs_d (count x 2K) (a_d W_d).
template <class Tile, typename T>
SPE_INLINE void build_codes(const SineFilterShape& s, const HeadCode<T>& hc, const double* omega, int64_t count,
                            int64_t columns, T* coeffs, T* codes, std::vector<T>& scratch) {
  const int64_t D = s.dim, J = 2 * s.sines, R = s.realizations;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < J; ++j) coeffs[(t * D + d) * columns + j] = static_cast<T>(omega[(t * D + d) * J + j]);
  for (int64_t d = 0; d < D; ++d)
    small_gemm<Tile>(false, false, count, R, J, coeffs + d * columns, D * columns, hc.scaled_weights.data() + d * J * R,
                     R, false, codes + d * R, position_stride(s), scratch, hc.shift + d * R);
}

// Prefetches the rows of `count` positions from n (none when count <= 0) of one head of p
// (B, N, H, width), for writing when Write: the rows of a head are 2 KB apart at H = 8 and
// 64 floats, too far apart for the hardware prefetcher to follow.
template <bool Write = false, typename T>
SPE_INLINE void prefetch_positions(const SineFilterShape& s, int64_t head, int64_t n, int64_t count, const T* p,
                                   int64_t width) {
  for (int64_t t = n; t < n + count; ++t)
    prefetch_rows<Write>(p + (t * s.heads + head) * width, s.batch, s.length * s.heads * width, width);
}

template <class Tile, typename T>
SPE_INLINE void forward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                              const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                              T* out) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, R = s.realizations, h = blk.head;
  const HeadCode<T> hc(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  const int64_t ld = position_stride(s);
  std::vector<T> codes(most * ld), coeffs(most * D * 2 * K), scratch;
  std::vector<double> omega(most * D * K * 2);
  const int64_t batch_stride = s.length * H;  // x[b, n, h] at x + (b * batch_stride + n * H + h) * D
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    const int64_t next = std::min(kTile, blk.end - t0 - kTile);  // positions in the next tile
    prefetch_positions(s, h, t0 + kTile, next, x, D);
    prefetch_positions<true>(s, h, t0 + kTile, next, out, R);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes<Tile>(s, hc, omega.data(), tile, 2 * K, coeffs.data(), codes.data(), scratch);
    for (int64_t t = 0; t < tile; ++t) {  // out_t (B x R) = x_t (B x D) code_t (D x R)
      const int64_t row0 = (t0 + t) * H + h;
      small_gemm<Tile>(false, false, s.batch, R, D, x + row0 * D, batch_stride * D, codes.data() + t * ld, R,
                       false, out + row0 * R, batch_stride * R, scratch);
    }
  }
}

// The sums over a block's positions n of grad_code_d(n) (R) times Omega(n), 1 and n Omega(n), for
// each d: (D, 2K + 1 + 2K, R). The gradients of every code parameter follow from them
// (add_head_gradients), so the backward's only per-position products are GEMMs.
template <typename T>
struct Moments {
  std::vector<T> sums;
  explicit Moments(const SineFilterShape& s) : sums(s.dim * moment_rows(s) * s.realizations) {}
  static int64_t moment_rows(const SineFilterShape& s) { return 4 * s.sines + 1; }
};

// Backward over a block, kTile positions at a time, every product a register-blocked small_gemm:
// the tile's codes are rebuilt; for each position, grad_code_t (D x R) = x_t^T g_t and
// grad_x_t = g_t code_t^T; then for each d, moments_d += [Omega; 1; n Omega]_d^T grad_code_d.
template <class Tile, typename T>
SPE_INLINE void backward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                               const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                               const T* grad_out, T* grad_x, Moments<T>& moments) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, J = 2 * K, R = s.realizations, B = s.batch, h = blk.head;
  const int64_t columns = Moments<T>::moment_rows(s);  // of coeffs: Omega (2K), 1, n Omega (2K)
  const HeadCode<T> hc(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  const int64_t ld = position_stride(s);
  std::vector<T> codes(most * ld), grad_code(most * ld);  // (tile, D, R), positions ld apart
  std::vector<T> xs(most * B * D), gs(most * B * R);     // the tile's x_t (B x D) and g_t (B x R)
  std::vector<T> coeffs(most * D * columns), scratch;
  std::vector<double> omega(most * D * J);  // (tile, D, 2K): cos, sin
  const int64_t batch_stride = s.length * H;
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes<Tile>(s, hc, omega.data(), tile, columns, coeffs.data(), codes.data(), scratch);
    for (int64_t t = 0; t < tile; ++t) {
      const double position = static_cast<double>(s.first_position + t0 + t);
      for (int64_t d = 0; d < D; ++d) {
        T* row = coeffs.data() + (t * D + d) * columns;
        row[J] = T(1);
        for (int64_t j = 0; j < J; ++j) row[J + 1 + j] = static_cast<T>(position * omega[(t * D + d) * J + j]);
      }
    }
    // Copied together first: the rows of one head are 2 KB apart in x and grad_out, and the
    // batch's rows of one position megabytes apart (the same cache sets).
    for (int64_t t = 0; t < tile; ++t)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = b * batch_stride + (t0 + t) * H + h;
        std::copy_n(x + row * D, D, xs.data() + (t * B + b) * D);
        std::copy_n(grad_out + row * R, R, gs.data() + (t * B + b) * R);
      }
    for (int64_t t = 0; t < tile; ++t) {
      const T* xt = xs.data() + t * B * D;  // x_t (B x D)
      const T* gt = gs.data() + t * B * R;  // g_t (B x R)
      const int64_t row0 = (t0 + t) * H + h;
      small_gemm<Tile>(true, false, D, R, B, xt, D, gt, R, false, grad_code.data() + t * ld, R, scratch);
      small_gemm<Tile>(false, true, B, D, R, gt, R, codes.data() + t * ld, R, false, grad_x + row0 * D,
                       batch_stride * D, scratch);
    }
    for (int64_t d = 0; d < D; ++d)  // grad_code_d (tile x R), rows ld apart
      small_gemm<Tile>(true, false, columns, R, tile, coeffs.data() + d * columns, D * columns,
                       grad_code.data() + d * R, ld, true, moments.sums.data() + d * columns * R, R, scratch);
  }
}

// One variant per instruction set and element type (isa.h).
#ifdef SPE_X86_DISPATCH
#define SPE_VARIANT(TARGET, SUFFIX, TILE, T)                                                                   \
  TARGET void forward_##SUFFIX(const SineFilterShape& s, const Block& b, const T* x, const double* f,          \
                               const double* p, const T* w, const T* a, const T* c, T* o) {                   \
    forward_block<TILE>(s, b, x, f, p, w, a, c, o);                                                           \
  }                                                                                                            \
  TARGET void backward_##SUFFIX(const SineFilterShape& s, const Block& b, const T* x, const double* f,         \
                                const double* p, const T* w, const T* a, const T* c, const T* g, T* gx,       \
                                Moments<T>& moments) {                                                       \
    backward_block<TILE>(s, b, x, f, p, w, a, c, g, gx, moments);                                                 \
  }
SPE_VARIANT(SPE_TARGET_AVX512, avx512, Avx512Tile, float)
SPE_VARIANT(SPE_TARGET_AVX512, avx512, Avx512Tile, double)
SPE_VARIANT(SPE_TARGET_AVX2, avx2, Avx2Tile, float)
SPE_VARIANT(SPE_TARGET_AVX2, avx2, Avx2Tile, double)
#undef SPE_VARIANT
#endif

template <typename T>
void forward_dispatch([[maybe_unused]] Isa isa, const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                      const T* w, const T* a, const T* c, T* o) {
#ifdef SPE_X86_DISPATCH
  if (isa == Isa::avx512) return forward_avx512(s, b, x, f, p, w, a, c, o);
  if (isa == Isa::avx2) return forward_avx2(s, b, x, f, p, w, a, c, o);
#endif
  forward_block<BaselineTile>(s, b, x, f, p, w, a, c, o);
}

template <typename T>
void backward_dispatch([[maybe_unused]] Isa isa, const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                       const T* w, const T* a, const T* c, const T* g, T* gx, Moments<T>& moments) {
#ifdef SPE_X86_DISPATCH
  if (isa == Isa::avx512) return backward_avx512(s, b, x, f, p, w, a, c, g, gx, moments);
  if (isa == Isa::avx2) return backward_avx2(s, b, x, f, p, w, a, c, g, gx, moments);
#endif
  backward_block<BaselineTile>(s, b, x, f, p, w, a, c, g, gx, moments);
}

// The gradients of one d's code parameters from its moments (4K + 1, R), sums over positions n of
// G(n) = grad_code_d(n) times A: Omega(n), then 1, then P: n Omega(n). As code = c + a Omega W and
// d(cos, sin)/d phase = (-sin, cos), the phase of sine k being 2 pi f_k n + theta_k:
//   grad W_j = a A_j,  grad c = sum_n G(n),  grad a = sum_j W_j . A_j,
//   grad theta_k = a (W_2k+1 . A_2k - W_2k . A_2k+1),  grad f_k = 2 pi a (W_2k+1 . P_2k - W_2k . P_2k+1).
template <typename T>
void set_feature_gradients(int64_t K, int64_t R, const double* moments, const T* w, T a, double* grad_f,
                        double* grad_theta, T* grad_w, T& grad_a, T* grad_c) {
  const double* A = moments;
  const double* ones = moments + 2 * K * R;
  const double* P = ones + R;
  auto dot = [R](const T* u, const double* v) {
    double sum = 0;
    for (int64_t r = 0; r < R; ++r) sum += static_cast<double>(u[r]) * v[r];
    return sum;
  };
  double scale_sum = 0;
  for (int64_t j = 0; j < 2 * K; ++j) {
    scale_sum += dot(w + j * R, A + j * R);
    for (int64_t r = 0; r < R; ++r) grad_w[j * R + r] = static_cast<T>(static_cast<double>(a) * A[j * R + r]);
  }
  grad_a = static_cast<T>(scale_sum);
  for (int64_t r = 0; r < R; ++r) grad_c[r] = static_cast<T>(ones[r]);
  for (int64_t k = 0; k < K; ++k) {
    const T *w_cos = w + 2 * k * R, *w_sin = w_cos + R;
    const int64_t cos_row = 2 * k * R, sin_row = cos_row + R;
    grad_theta[k] = static_cast<double>(a) * (dot(w_sin, A + cos_row) - dot(w_cos, A + sin_row));
    grad_f[k] = kTwoPi * static_cast<double>(a) * (dot(w_sin, P + cos_row) - dot(w_cos, P + sin_row));
  }
}

}  // namespace

template <typename T>
void sine_spe_filter_forward(const SineFilterShape& s, const T* x, const double* frequencies, const double* phases,
                             const T* weights, const T* gate_scale, const T* gate_shift, T* out) {
  const std::vector<Block> blocks = blocks_of(s);
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      forward_dispatch(isa, s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, out);
  });
}

template <typename T>
void sine_spe_filter_backward(const SineFilterShape& s, const T* x, const double* frequencies, const double* phases,
                              const T* weights, const T* gate_scale, const T* gate_shift, const T* grad_out,
                              T* grad_x, double* grad_frequencies, double* grad_phases, T* grad_weights,
                              T* grad_gate_scale, T* grad_gate_shift) {
  const std::vector<Block> blocks = blocks_of(s);
  std::vector<Moments<T>> moments(blocks.size(), Moments<T>(s));
  const Isa isa = best_isa();
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      backward_dispatch(isa, s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, grad_out, grad_x,
                        moments[i]);
  });
  const int64_t D = s.dim, K = s.sines, R = s.realizations, rows = Moments<T>::moment_rows(s);
  for (int64_t h = 0; h < s.heads; ++h) {
    std::vector<double> head(D * rows * R);  // the moments of the head's blocks, summed in float64
    for (size_t i = 0; i < blocks.size(); ++i)
      if (blocks[i].head == h)
        for (size_t j = 0; j < head.size(); ++j) head[j] += static_cast<double>(moments[i].sums[j]);
    const int64_t hd = h * D;
    for (int64_t d = 0; d < D; ++d)
      set_feature_gradients(K, R, head.data() + d * rows * R, weights + (hd + d) * 2 * K * R, gate_scale[hd + d],
                         grad_frequencies + (hd + d) * K, grad_phases + (hd + d) * K, grad_weights + (hd + d) * 2 * K * R,
                         grad_gate_scale[hd + d], grad_gate_shift + (hd + d) * R);
  }
}

#define SPE_INSTANTIATE(T)                                                                                  \
  template void sine_spe_filter_forward<T>(const SineFilterShape&, const T*, const double*, const double*,    \
                                           const T*, const T*, const T*, T*);                               \
  template void sine_spe_filter_backward<T>(const SineFilterShape&, const T*, const double*, const double*,   \
                                            const T*, const T*, const T*, const T*, T*, double*, double*, T*, \
                                            T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
