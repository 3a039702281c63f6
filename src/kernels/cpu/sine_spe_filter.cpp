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

// The pointers of one head.
template <typename T>
struct HeadData {
  const T* w;  // (D, 2K, R)
  const T* a;  // (D)
  const T* c;  // (D, R)
};

template <typename T>
HeadData<T> head_data(const SineFilterShape& s, int64_t h, const T* weights, const T* gate_scale, const T* gate_shift) {
  const int64_t D = s.dim, K = s.sines, R = s.realizations;
  return {weights + h * D * 2 * K * R, gate_scale + h * D, gate_shift + h * D * R};
}

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

// coeffs (count, D, 2K + 1) = (a_d Omega_j(t) for j < 2K, then 1) of `count` positions, from
// their omega (count, D K, 2), and their codes (count, D, R) (positions position_stride apart): for
// each d, code_d (count x R) = c_d + coeffs_d (count x 2K) W_d. (The column of ones makes the
// backward's product coeffs_d^T grad_code_d give the gradient of c_d with those of W_d.)
template <class Tile, typename T>
SPE_INLINE void build_codes(const SineFilterShape& s, const HeadData<T>& hd, const double* omega, int64_t count,
                            T* coeffs, T* codes, std::vector<T>& scratch) {
  const int64_t D = s.dim, J = 2 * s.sines, R = s.realizations;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t d = 0; d < D; ++d) {
      T* row = coeffs + (t * D + d) * (J + 1);
      for (int64_t j = 0; j < J; ++j) row[j] = hd.a[d] * static_cast<T>(omega[(t * D + d) * J + j]);
      row[J] = T(1);
    }
  for (int64_t d = 0; d < D; ++d)
    small_gemm<Tile>(false, false, count, R, J, coeffs + d * (J + 1), D * (J + 1), hd.w + d * J * R, R, false,
                     codes + d * R, position_stride(s), scratch, hd.c + d * R);
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
  const HeadData<T> hd = head_data(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  const int64_t ld = position_stride(s);
  std::vector<T> codes(most * ld), coeffs(most * D * (2 * K + 1)), scratch;
  std::vector<double> omega(most * D * K * 2);
  const int64_t batch_stride = s.length * H;  // x[b, n, h] at x + (b * batch_stride + n * H + h) * D
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    const int64_t next = std::min(kTile, blk.end - t0 - kTile);  // positions in the next tile
    prefetch_positions(s, h, t0 + kTile, next, x, D);
    prefetch_positions<true>(s, h, t0 + kTile, next, out, R);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes<Tile>(s, hd, omega.data(), tile, coeffs.data(), codes.data(), scratch);
    for (int64_t t = 0; t < tile; ++t) {  // out_t (B x R) = x_t (B x D) code_t (D x R)
      const int64_t row0 = (t0 + t) * H + h;
      small_gemm<Tile>(false, false, s.batch, R, D, x + row0 * D, batch_stride * D, codes.data() + t * ld, R,
                       false, out + row0 * R, batch_stride * R, scratch);
    }
  }
}

// Per-block gradient accumulators of the code parameters, reduced over the blocks of a head.
template <typename T>
struct Accumulators {
  std::vector<T> weights_shift, scale;      // (D, 2K + 1, R): W_d's rows then c_d's; (D)
  std::vector<double> frequencies, phases;  // (D, K)
  explicit Accumulators(const SineFilterShape& s)
      : weights_shift(s.dim * (2 * s.sines + 1) * s.realizations), scale(s.dim), frequencies(s.dim * s.sines),
        phases(s.dim * s.sines) {}
};

// The gradients of a d's phases, frequencies and gate scale from its omega (2K, tile) and
// grad_omega (2K, tile), the derivatives of the loss with respect to Omega_j(t) / a_d (that is
// grad_code_td . W_dj), in float64, a vector of positions at a time.
template <class Tile, typename T>
SPE_INLINE void add_oscillator_gradients(const SineFilterShape& s, int64_t d, T scale, const double* omega,
                                         const T* grad_omega, int64_t first, int64_t tile, Accumulators<T>& acc) {
  using VecDouble = Vec<double, Tile::bytes>;
  constexpr int64_t W = kLanes<double, Tile::bytes>;
  const int64_t K = s.sines;
  VecDouble position{}, scale_sum{};  // position: of the lanes of the first vector of positions
  for (int64_t l = 0; l < W; ++l) position[l] = static_cast<double>(s.first_position + first + l);
  for (int64_t k = 0; k < K; ++k) {
    const double *cos = omega + 2 * k * tile, *sin = cos + tile;
    const T *grad_cos = grad_omega + 2 * k * tile, *grad_sin = grad_cos + tile;
    VecDouble phase_sum{}, frequency_sum{}, at = position;
    int64_t t = 0;
    for (; t + W <= tile; t += W, at += static_cast<double>(W)) {
      const VecDouble c = load<Tile::bytes>(cos + t), sn = load<Tile::bytes>(sin + t),
                      gc = load_as_double<Tile::bytes>(grad_cos + t), gs = load_as_double<Tile::bytes>(grad_sin + t);
      scale_sum += c * gc + sn * gs;
      const VecDouble g = c * gs - sn * gc;  // d/d phase of (cos, sin) = (-sin, cos)
      phase_sum += g;
      frequency_sum += g * at;
    }
    double grad_phase = 0, grad_frequency = 0;
    for (int64_t l = 0; l < W; ++l) grad_phase += phase_sum[l], grad_frequency += frequency_sum[l];
    for (; t < tile; ++t) {
      const double gc = grad_cos[t], gs = grad_sin[t], g = cos[t] * gs - sin[t] * gc;
      scale_sum[0] += cos[t] * gc + sin[t] * gs;
      grad_phase += g;
      grad_frequency += g * static_cast<double>(s.first_position + first + t);
    }
    acc.phases[d * K + k] += static_cast<double>(scale) * grad_phase;
    acc.frequencies[d * K + k] += static_cast<double>(scale) * kTwoPi * grad_frequency;
  }
  double grad_scale = 0;
  for (int64_t l = 0; l < W; ++l) grad_scale += scale_sum[l];
  acc.scale[d] += static_cast<T>(grad_scale);
}

// Backward over a block, kTile positions at a time, every product a register-blocked small_gemm:
// the tile's codes are rebuilt; for each position, grad_code_t (D x R) = x_t^T g_t and
// grad_x_t = g_t code_t^T; then for each d, grad W_d += coeffs_d^T grad_code_d and the
// gradients of Omega(t), W_d grad_code_d^T (2K x tile).
template <class Tile, typename T>
SPE_INLINE void backward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                               const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                               const T* grad_out, T* grad_x, Accumulators<T>& acc) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, J = 2 * K, R = s.realizations, B = s.batch, h = blk.head;
  const HeadData<T> hd = head_data(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  const int64_t ld = position_stride(s);
  std::vector<T> codes(most * ld), grad_code(most * ld);  // (tile, D, R), positions ld apart
  std::vector<T> xs(most * B * D), gs(most * B * R);     // the tile's x_t (B x D) and g_t (B x R)
  std::vector<T> coeffs(most * D * (J + 1)), grad_omega(J * most), scratch;
  std::vector<double> omega(most * D * J), omega_d(J * most);  // (tile, D, 2K): cos, sin; one d's (2K, tile)
  const int64_t batch_stride = s.length * H;
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes<Tile>(s, hd, omega.data(), tile, coeffs.data(), codes.data(), scratch);
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
    for (int64_t d = 0; d < D; ++d) {
      const T* rows = grad_code.data() + d * R;  // grad_code_d (tile x R), rows ld apart
      small_gemm<Tile>(true, false, J + 1, R, tile, coeffs.data() + d * (J + 1), D * (J + 1), rows, ld, true,
                       acc.weights_shift.data() + d * (J + 1) * R, R, scratch);
      small_gemm<Tile>(false, true, J, tile, R, hd.w + d * J * R, R, rows, ld, false, grad_omega.data(), tile,
                       scratch);
      transpose<Tile::bytes>(tile, J, omega.data() + d * J, D * J, omega_d.data());
      add_oscillator_gradients<Tile>(s, d, hd.a[d], omega_d.data(), grad_omega.data(), t0, tile, acc);
    }
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
                                Accumulators<T>& acc) {                                                       \
    backward_block<TILE>(s, b, x, f, p, w, a, c, g, gx, acc);                                                 \
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
                       const T* w, const T* a, const T* c, const T* g, T* gx, Accumulators<T>& acc) {
#ifdef SPE_X86_DISPATCH
  if (isa == Isa::avx512) return backward_avx512(s, b, x, f, p, w, a, c, g, gx, acc);
  if (isa == Isa::avx2) return backward_avx2(s, b, x, f, p, w, a, c, g, gx, acc);
#endif
  backward_block<BaselineTile>(s, b, x, f, p, w, a, c, g, gx, acc);
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
  std::vector<Accumulators<T>> acc(blocks.size(), Accumulators<T>(s));
  const Isa isa = best_isa();
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      backward_dispatch(isa, s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, grad_out, grad_x,
                        acc[i]);
  });
  // Reduce the blocks of each head into the (H, ...) gradients.
  const int64_t D = s.dim, K = s.sines, R = s.realizations;
  std::fill(grad_weights, grad_weights + s.heads * D * 2 * K * R, T(0));
  std::fill(grad_frequencies, grad_frequencies + s.heads * D * K, 0.0);
  std::fill(grad_phases, grad_phases + s.heads * D * K, 0.0);
  std::fill(grad_gate_scale, grad_gate_scale + s.heads * D, T(0));
  std::fill(grad_gate_shift, grad_gate_shift + s.heads * D * R, T(0));
  auto add = [](auto* target, const auto& source) {
    for (size_t j = 0; j < source.size(); ++j) target[j] += source[j];
  };
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int64_t h = blocks[i].head;
    add(grad_frequencies + h * D * K, acc[i].frequencies);
    add(grad_phases + h * D * K, acc[i].phases);
    add(grad_gate_scale + h * D, acc[i].scale);
    for (int64_t d = 0; d < D; ++d) {
      const T* rows = acc[i].weights_shift.data() + d * (2 * K + 1) * R;  // 2K rows of W_d, then c_d
      T* weights = grad_weights + (h * D + d) * 2 * K * R;
      for (int64_t j = 0; j < 2 * K * R; ++j) weights[j] += rows[j];
      T* shift = grad_gate_shift + (h * D + d) * R;
      for (int64_t r = 0; r < R; ++r) shift[r] += rows[2 * K * R + r];
    }
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
