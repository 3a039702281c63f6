#include "sine_spe_filter.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

// The hot loops run over R with unit stride; they are compiled for AVX-512, AVX2+FMA and the
// baseline, chosen at run time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SPE_VECTOR_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define SPE_VECTOR_CLONES
#endif

namespace spe::kernels::cpu {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr int64_t kResync = 64;  // positions between exact evaluations of the oscillators

// cos/sin of 2 pi f n + theta for consecutive n by complex rotation, re-evaluated exactly every
// kResync steps so that rounding does not accumulate.
struct Oscillators {
  const double* f;
  const double* theta;
  int64_t count;
  std::vector<double> cos_now, sin_now, cos_step, sin_step;

  Oscillators(const double* frequencies, const double* phases, int64_t n)
      : f(frequencies), theta(phases), count(n), cos_now(n), sin_now(n), cos_step(n), sin_step(n) {
    for (int64_t i = 0; i < n; ++i) {
      cos_step[i] = std::cos(kTwoPi * f[i]);
      sin_step[i] = std::sin(kTwoPi * f[i]);
    }
  }
  void set(int64_t position) {
    for (int64_t i = 0; i < count; ++i) {
      const double phase = kTwoPi * f[i] * static_cast<double>(position) + theta[i];
      cos_now[i] = std::cos(phase);
      sin_now[i] = std::sin(phase);
    }
  }
  void advance(int64_t next_position, int64_t steps_since_set) {
    if (steps_since_set % kResync == 0) return set(next_position);
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
    for (int64_t i = 0; i < per_head; ++i)
      blocks.push_back({h, s.length * i / per_head, s.length * (i + 1) / per_head});
  return blocks;
}

// code (D, R) of one position from the oscillators: a_d sum_j Omega_j W_dj + c_d.
template <typename T>
inline void build_code(const SineFilterShape& s, const Oscillators& osc, const T* w, const T* a, const T* c,
                       T* code) {
  const int64_t K = s.sines, R = s.realizations;
  for (int64_t d = 0; d < s.dim; ++d) {
    T* row = code + d * R;
    const T scale = a[d];
    std::copy(c + d * R, c + (d + 1) * R, row);
    for (int64_t k = 0; k < K; ++k) {
      const T wc = scale * static_cast<T>(osc.cos_now[d * K + k]);
      const T ws = scale * static_cast<T>(osc.sin_now[d * K + k]);
      const T* w_cos = w + (d * 2 * K + 2 * k) * R;
      const T* w_sin = w_cos + R;
#pragma omp simd
      for (int64_t r = 0; r < R; ++r) row[r] += wc * w_cos[r] + ws * w_sin[r];
    }
  }
}

template <typename T>
inline void forward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                          const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                          T* out) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, R = s.realizations, h = blk.head;
  const T* w = weights + h * D * 2 * K * R;
  const T* a = gate_scale + h * D;
  const T* c = gate_shift + h * D * R;
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  std::vector<T> code(D * R);
  for (int64_t n = blk.begin; n < blk.end; ++n) {
    osc.advance(s.first_position + n, n - blk.begin);
    build_code(s, osc, w, a, c, code.data());
    for (int64_t b = 0; b < s.batch; ++b) {
      const T* xr = x + ((b * s.length + n) * H + h) * D;
      T* o = out + ((b * s.length + n) * H + h) * R;
      std::fill(o, o + R, T(0));
      for (int64_t d = 0; d < D; ++d) {
        const T xv = xr[d];
        const T* row = code.data() + d * R;
#pragma omp simd
        for (int64_t r = 0; r < R; ++r) o[r] += xv * row[r];
      }
    }
  }
}

// Per-block gradient accumulators of the code parameters, reduced over the blocks of a head.
template <typename T>
struct Accumulators {
  std::vector<T> weights, scale, shift;          // (D, 2K, R), (D), (D, R)
  std::vector<double> frequencies, phases;       // (D, K)
  explicit Accumulators(const SineFilterShape& s)
      : weights(s.dim * 2 * s.sines * s.realizations), scale(s.dim), shift(s.dim * s.realizations),
        frequencies(s.dim * s.sines), phases(s.dim * s.sines) {}
};

template <typename T>
inline void backward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                           const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                           const T* grad_out, T* grad_x, Accumulators<T>& acc) {
  const int64_t H = s.heads, D = s.dim, K = s.sines, R = s.realizations, h = blk.head;
  const T* w = weights + h * D * 2 * K * R;
  const T* a = gate_scale + h * D;
  const T* c = gate_shift + h * D * R;
  Oscillators osc(freq + h * D * K, phase + h * D * K, D * K);
  std::vector<T> code(D * R), grad_code(D * R);
  for (int64_t n = blk.begin; n < blk.end; ++n) {
    const int64_t position = s.first_position + n;
    osc.advance(position, n - blk.begin);
    build_code(s, osc, w, a, c, code.data());
    // grad_x[b, d] = g_b . code_d and grad_code[d] = sum_b x[b, d] g_b
    std::fill(grad_code.begin(), grad_code.end(), T(0));
    for (int64_t b = 0; b < s.batch; ++b) {
      const T* xr = x + ((b * s.length + n) * H + h) * D;
      const T* g = grad_out + ((b * s.length + n) * H + h) * R;
      T* gx = grad_x + ((b * s.length + n) * H + h) * D;
      for (int64_t d = 0; d < D; ++d) {
        const T* row = code.data() + d * R;
        T* grow = grad_code.data() + d * R;
        const T xv = xr[d];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t r = 0; r < R; ++r) {
          dot += g[r] * row[r];
          grow[r] += xv * g[r];
        }
        gx[d] = dot;
      }
    }
    // through code = a sum_j Omega_j W_j + c
    for (int64_t d = 0; d < D; ++d) {
      const T* grow = grad_code.data() + d * R;
      const T scale = a[d];
      T* shift = acc.shift.data() + d * R;
#pragma omp simd
      for (int64_t r = 0; r < R; ++r) shift[r] += grow[r];
      double grad_scale = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double cos_v = osc.cos_now[d * K + k], sin_v = osc.sin_now[d * K + k];
        const T* w_cos = w + (d * 2 * K + 2 * k) * R;
        const T* w_sin = w_cos + R;
        T* acc_cos = acc.weights.data() + (d * 2 * K + 2 * k) * R;
        T* acc_sin = acc_cos + R;
        const T sc = scale * static_cast<T>(cos_v), ss = scale * static_cast<T>(sin_v);
        T t_cos = 0, t_sin = 0;  // grad_code_d . W_j
#pragma omp simd reduction(+ : t_cos, t_sin)
        for (int64_t r = 0; r < R; ++r) {
          t_cos += grow[r] * w_cos[r];
          t_sin += grow[r] * w_sin[r];
          acc_cos[r] += sc * grow[r];
          acc_sin[r] += ss * grow[r];
        }
        grad_scale += cos_v * t_cos + sin_v * t_sin;
        // d/d phase of (cos, sin) = (-sin, cos), scaled by a
        const double grad_phase = static_cast<double>(scale) * (-sin_v * t_cos + cos_v * t_sin);
        acc.phases[d * K + k] += grad_phase;
        acc.frequencies[d * K + k] += grad_phase * kTwoPi * static_cast<double>(position);
      }
      acc.scale[d] += static_cast<T>(grad_scale);
    }
  }
}

// The entry points of the vectorised clones, one per element type.
SPE_VECTOR_CLONES void forward_block_vectorized(const SineFilterShape& s, const Block& b, const float* x,
                                                const double* f, const double* p, const float* w, const float* a,
                                                const float* c, float* o) {
  forward_block(s, b, x, f, p, w, a, c, o);
}
SPE_VECTOR_CLONES void forward_block_vectorized(const SineFilterShape& s, const Block& b, const double* x,
                                                const double* f, const double* p, const double* w, const double* a,
                                                const double* c, double* o) {
  forward_block(s, b, x, f, p, w, a, c, o);
}
SPE_VECTOR_CLONES void backward_block_vectorized(const SineFilterShape& s, const Block& b, const float* x,
                                                 const double* f, const double* p, const float* w, const float* a,
                                                 const float* c, const float* g, float* gx,
                                                 Accumulators<float>& acc) {
  backward_block(s, b, x, f, p, w, a, c, g, gx, acc);
}
SPE_VECTOR_CLONES void backward_block_vectorized(const SineFilterShape& s, const Block& b, const double* x,
                                                 const double* f, const double* p, const double* w,
                                                 const double* a, const double* c, const double* g, double* gx,
                                                 Accumulators<double>& acc) {
  backward_block(s, b, x, f, p, w, a, c, g, gx, acc);
}

}  // namespace

template <typename T>
void sine_spe_filter_forward(const SineFilterShape& s, const T* x, const double* frequencies, const double* phases,
                             const T* weights, const T* gate_scale, const T* gate_shift, T* out) {
  const std::vector<Block> blocks = blocks_of(s);
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      forward_block_vectorized(s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, out);
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
      backward_block_vectorized(s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, grad_out, grad_x,
                         acc[i]);
  });
  // Reduce the blocks of each head into the (H, ...) gradients.
  const int64_t D = s.dim, K = s.sines, R = s.realizations;
  std::fill(grad_weights, grad_weights + s.heads * D * 2 * K * R, T(0));
  std::fill(grad_frequencies, grad_frequencies + s.heads * D * K, 0.0);
  std::fill(grad_phases, grad_phases + s.heads * D * K, 0.0);
  std::fill(grad_gate_scale, grad_gate_scale + s.heads * D, T(0));
  std::fill(grad_gate_shift, grad_gate_shift + s.heads * D * R, T(0));
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int64_t h = blocks[i].head;
    auto add = [](auto* target, const auto& source) {
      for (size_t j = 0; j < source.size(); ++j) target[j] += source[j];
    };
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
