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

// codes (count, D, R) of `count` positions: code_d = a_d sum_j Omega_j W_dj + c_d, from their
// omega (count, D K, 2); each row of W is loaded once for kShared positions.
// coeffs: scratch of D * count * 2K.
template <typename T>
SPE_INLINE void build_codes(const SineFilterShape& s, const HeadData<T>& hd, const double* omega, int64_t count,
                            T* coeffs, T* codes) {
  const int64_t D = s.dim, K = s.sines, R = s.realizations;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t p = 0; p < count; ++p)
      for (int64_t j = 0; j < 2 * K; ++j)
        coeffs[(d * count + p) * 2 * K + j] = hd.a[d] * static_cast<T>(omega[(p * D * K + d * K) * 2 + j]);
  for (int64_t d = 0; d < D; ++d)
    combine_rows_many(count, 2 * K, coeffs + d * count * 2 * K, hd.w + d * 2 * K * R, R, hd.c + d * R, 0,
                      codes + d * R, D * R, R);
}

template <typename T>
SPE_INLINE void forward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                              const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                              T* out) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, R = s.realizations, h = blk.head;
  const HeadData<T> hd = head_data(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  std::vector<T> codes(most * D * R), coeffs(D * most * 2 * K), xs(s.batch * D), zeros(R);
  std::vector<double> omega(most * D * K * 2);
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes(s, hd, omega.data(), tile, coeffs.data(), codes.data());
    // out_b = sum_d x[b, d] code_d, for all b at once so that each code row is read once
    for (int64_t t = 0; t < tile; ++t) {
      const int64_t row0 = (t0 + t) * H + h, batch_stride = s.length * H;
      for (int64_t b = 0; b < s.batch; ++b) std::copy_n(x + (b * batch_stride + row0) * D, D, xs.data() + b * D);
      combine_rows_many(s.batch, D, xs.data(), codes.data() + t * D * R, R, zeros.data(), 0, out + row0 * R,
                        batch_stride * R, R);
    }
  }
}

// Per-block gradient accumulators of the code parameters, reduced over the blocks of a head.
template <typename T>
struct Accumulators {
  std::vector<T> weights, scale, shift;     // (D, 2K, R), (D), (D, R)
  std::vector<double> frequencies, phases;  // (D, K)
  explicit Accumulators(const SineFilterShape& s)
      : weights(s.dim * 2 * s.sines * s.realizations), scale(s.dim), shift(s.dim * s.realizations),
        frequencies(s.dim * s.sines), phases(s.dim * s.sines) {}
};

// Backward over a block, kTile positions at a time. For each position: the code is rebuilt,
// grad_x[b, d] = g_b . code_d and grad_code_d = sum_b x[b, d] g_b (kept for the tile). Then,
// for each d and j, the tile's grad_code rows are reduced at once into grad W_dj (weights
// a Omega_j(t)) and dotted with W_dj for the gradient of Omega_j(t).
template <typename T>
SPE_INLINE void backward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                               const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                               const T* grad_out, T* grad_x, Accumulators<T>& acc) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, R = s.realizations, B = s.batch, h = blk.head;
  const HeadData<T> hd = head_data(s, h, weights, gate_scale, gate_shift);
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  std::vector<T> codes(most * D * R), coeffs(D * most * 2 * K), xs(B * D), gx(B), zeros(R), dots(2 * K);
  std::vector<T> grad_code(most * D * R);       // (tile, D, R)
  std::vector<double> omega(most * D * K * 2);  // (tile, D, 2K): cos, sin of each position
  const std::vector<T> ones(most, T(1));
  const int64_t batch_stride = s.length * H;
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    sample_oscillators(osc, s, blk, t0, tile, omega.data());
    build_codes(s, hd, omega.data(), tile, coeffs.data(), codes.data());
    for (int64_t t = 0; t < tile; ++t) {
      const T* code = codes.data() + t * D * R;
      const int64_t row0 = (t0 + t) * H + h;
      const T* g = grad_out + row0 * R;  // g_b at g + b * batch_stride * R
      for (int64_t b = 0; b < B; ++b) std::copy_n(x + (b * batch_stride + row0) * D, D, xs.data() + b * D);
      for (int64_t d = 0; d < D; ++d) {
        // grad_code_d = sum_b x[b, d] g_b and grad_x[b, d] = g_b . code_d
        for (int64_t b = 0; b < B; ++b) gx[b] = xs[b * D + d];
        combine_rows(B, gx.data(), g, batch_stride * R, zeros.data(), grad_code.data() + (t * D + d) * R, R);
        dot_many(B, code + d * R, g, batch_stride * R, R, gx.data());
        for (int64_t b = 0; b < B; ++b) grad_x[(b * batch_stride + row0) * D + d] = gx[b];
      }
    }
    for (int64_t d = 0; d < D; ++d) {
      const T* rows = grad_code.data() + d * R;  // row t at rows + t * D * R
      T* shift = acc.shift.data() + d * R;
      combine_rows(tile, ones.data(), rows, D * R, shift, shift, R);
      // grad W_dj += sum_t a Omega_j(t) grad_code_td, for all j at once
      for (int64_t j = 0; j < 2 * K; ++j)
        for (int64_t t = 0; t < tile; ++t)
          coeffs[j * tile + t] = hd.a[d] * static_cast<T>(omega[(t * D + d) * 2 * K + j]);
      T* acc_d = acc.weights.data() + d * 2 * K * R;
      combine_rows_many(2 * K, tile, coeffs.data(), rows, D * R, acc_d, R, acc_d, R, R);
      // the gradients of Omega_j(t): a grad_code_td . W_dj
      double grad_scale = 0;
      for (int64_t t = 0; t < tile; ++t) {
        dot_many(2 * K, rows + t * D * R, hd.w + d * 2 * K * R, R, R, dots.data());
        const double* om = omega.data() + (t * D + d) * 2 * K;
        const double position = static_cast<double>(s.first_position + t0 + t);
        for (int64_t k = 0; k < K; ++k) {
          const double t_cos = dots[2 * k], t_sin = dots[2 * k + 1];
          grad_scale += om[2 * k] * t_cos + om[2 * k + 1] * t_sin;
          // d/d phase of (cos, sin) = (-sin, cos), scaled by a
          const double grad_phase = static_cast<double>(hd.a[d]) * (-om[2 * k + 1] * t_cos + om[2 * k] * t_sin);
          acc.phases[d * K + k] += grad_phase;
          acc.frequencies[d * K + k] += grad_phase * kTwoPi * position;
        }
      }
      acc.scale[d] += static_cast<T>(grad_scale);
    }
  }
}

// One variant per instruction set and element type (isa.h).
#ifdef SPE_X86_DISPATCH
#define SPE_VARIANT(TARGET, SUFFIX, T)                                                                         \
  TARGET void forward_##SUFFIX(const SineFilterShape& s, const Block& b, const T* x, const double* f,          \
                               const double* p, const T* w, const T* a, const T* c, T* o) {                   \
    forward_block(s, b, x, f, p, w, a, c, o);                                                                 \
  }                                                                                                            \
  TARGET void backward_##SUFFIX(const SineFilterShape& s, const Block& b, const T* x, const double* f,         \
                                const double* p, const T* w, const T* a, const T* c, const T* g, T* gx,       \
                                Accumulators<T>& acc) {                                                       \
    backward_block(s, b, x, f, p, w, a, c, g, gx, acc);                                                       \
  }
SPE_VARIANT(SPE_TARGET_AVX512, avx512, float)
SPE_VARIANT(SPE_TARGET_AVX512, avx512, double)
SPE_VARIANT(SPE_TARGET_AVX2, avx2, float)
SPE_VARIANT(SPE_TARGET_AVX2, avx2, double)
#undef SPE_VARIANT
#endif

template <typename T>
void forward_dispatch(const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                      const T* w, const T* a, const T* c, T* o) {
#ifdef SPE_X86_DISPATCH
  if (best_isa() == Isa::avx512) return forward_avx512(s, b, x, f, p, w, a, c, o);
  if (best_isa() == Isa::avx2) return forward_avx2(s, b, x, f, p, w, a, c, o);
#endif
  forward_block(s, b, x, f, p, w, a, c, o);
}

template <typename T>
void backward_dispatch(const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                       const T* w, const T* a, const T* c, const T* g, T* gx, Accumulators<T>& acc) {
#ifdef SPE_X86_DISPATCH
  if (best_isa() == Isa::avx512) return backward_avx512(s, b, x, f, p, w, a, c, g, gx, acc);
  if (best_isa() == Isa::avx2) return backward_avx2(s, b, x, f, p, w, a, c, g, gx, acc);
#endif
  backward_block(s, b, x, f, p, w, a, c, g, gx, acc);
}

}  // namespace

template <typename T>
void sine_spe_filter_forward(const SineFilterShape& s, const T* x, const double* frequencies, const double* phases,
                             const T* weights, const T* gate_scale, const T* gate_shift, T* out) {
  const std::vector<Block> blocks = blocks_of(s);
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      forward_dispatch(s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, out);
  });
}

template <typename T>
void sine_spe_filter_backward(const SineFilterShape& s, const T* x, const double* frequencies, const double* phases,
                              const T* weights, const T* gate_scale, const T* gate_shift, const T* grad_out,
                              T* grad_x, double* grad_frequencies, double* grad_phases, T* grad_weights,
                              T* grad_gate_scale, T* grad_gate_shift) {
  const std::vector<Block> blocks = blocks_of(s);
  std::vector<Accumulators<T>> acc(blocks.size(), Accumulators<T>(s));
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      backward_dispatch(s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, grad_out, grad_x,
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
    add(grad_weights + h * D * 2 * K * R, acc[i].weights);
    add(grad_frequencies + h * D * K, acc[i].frequencies);
    add(grad_phases + h * D * K, acc[i].phases);
    add(grad_gate_scale + h * D, acc[i].scale);
    add(grad_gate_shift + h * D * R, acc[i].shift);
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
