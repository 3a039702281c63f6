#include "kernels/cpu/decoding_step.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

// Eight outputs at a time: eight rows of the weight, each read once from memory in order, for
// every row of x (few: the sequences decoded together) while they are in cache; one vector
// accumulator per output (eight independent chains of multiply-adds), its lanes summed at the end.
// Outputs [begin, end) of the n.
struct RowsByWeight {
  static constexpr int64_t kOutputs = 8;

  template <class Tile, typename T>
  static SPE_INLINE void run(int64_t m, int64_t k, int64_t n, const T* x, const T* w, const T* bias, T* y,
                             int64_t begin, int64_t end) {
    constexpr int Bytes = Tile::bytes;
    int64_t o = begin;
    for (; o + kOutputs <= end; o += kOutputs)
      for (int64_t b = 0; b < m; ++b)
        outputs<kOutputs, Bytes>(k, x + b * k, w + o * k, bias ? bias + o : nullptr, y + b * n + o);
    for (; o < end; ++o)
      for (int64_t b = 0; b < m; ++b) outputs<1, Bytes>(k, x + b * k, w + o * k, bias ? bias + o : nullptr, y + b * n + o);
  }

  // y[r] = x . w[r k ..] + bias[r] for r < Outputs.
  template <int Outputs, int Bytes, typename T>
  static SPE_INLINE void outputs(int64_t k, const T* x, const T* w, const T* bias, T* y) {
    constexpr int64_t W = kLanes<T, Bytes>;
    Vec<T, Bytes> sums[Outputs] = {};
    int64_t i = 0;
    for (; i + W <= k; i += W) {
      const Vec<T, Bytes> xs = load<Bytes>(x + i);
      for (int r = 0; r < Outputs; ++r) sums[r] += xs * load<Bytes>(w + r * k + i);
    }
    for (int r = 0; r < Outputs; ++r) {
      T total = lane_sum(sums[r]);
      for (int64_t j = i; j < k; ++j) total += x[j] * w[r * k + j];
      y[r] = total + (bias ? bias[r] : T(0));
    }
  }
};

// One head of softmax_attention_step.
template <typename T>
struct SoftmaxHead {
  int64_t features, value_dim, length;
  const T *q, *key_tiles, *values;  // (P), (capacity / kKeyTile, P, kKeyTile), (capacity, Dv)
  T scale, log_decay;               // log_decay 0: no decay
  const T* clipped;                 // (clip + 1) or null
  int64_t clip;
  T* lag_weights;  // (clip + 1) or null
  T *scores, *out;
};

// The step in passes over the scores (L1-resident: 4 bytes per cached position): the scores of
// whole tiles, their bias and maximum, their exponentials and sums, then the value sums.
struct SoftmaxHeadStep {
  template <class Tile, typename T>
  static SPE_INLINE void run(const SoftmaxHead<T>& head) {
    constexpr int Bytes = Tile::bytes;
    const int64_t t = head.length - 1;
    // the positions whose lag is clipped (lag >= clip) end at far_end
    const bool lags = head.clipped || head.lag_weights;
    const int64_t far_end = lags ? std::max<int64_t>(0, head.length - head.clip) : head.length;
    score_tiles<Bytes>(head);
    const T top = bias_and_max<Bytes>(head, far_end);
    const T far = exp_and_sum<Bytes>(head.scores, 0, far_end, top);
    const T total = far + exp_and_sum<Bytes>(head.scores, far_end, head.length, top);
    const T inverse = T(1) / total;
    value_sums<Bytes>(head, inverse);
    if (head.lag_weights) {
      for (int64_t d = 0; d < head.clip; ++d) head.lag_weights[d] = d <= t ? head.scores[t - d] * inverse : T(0);
      head.lag_weights[head.clip] = far * inverse;
    }
  }

  // scores[j] = q . key j for every position of the tiles holding 0 .. t: Group tiles at a time,
  // so that at least four chains of multiply-adds are in flight.
  template <int Bytes, typename T>
  static SPE_INLINE void score_tiles(const SoftmaxHead<T>& head) {
    constexpr int64_t W = kLanes<T, Bytes>, Vecs = kKeyTile / W, Group = Vecs >= 4 ? 1 : 4 / Vecs;
    const int64_t tiles = (head.length + kKeyTile - 1) / kKeyTile, tile_size = head.features * kKeyTile;
    int64_t i = 0;
    for (; i + Group <= tiles; i += Group) score_group<Group, Vecs, Bytes>(head, i * tile_size, i * kKeyTile);
    for (; i < tiles; ++i) score_group<1, Vecs, Bytes>(head, i * tile_size, i * kKeyTile);
  }

  template <int Group, int Vecs, int Bytes, typename T>
  static SPE_INLINE void score_group(const SoftmaxHead<T>& head, int64_t tile_start, int64_t position) {
    constexpr int64_t W = kLanes<T, Bytes>;
    const int64_t tile_size = head.features * kKeyTile;
    const T* keys = head.key_tiles + tile_start;
    Vec<T, Bytes> sums[Group][Vecs] = {};
    for (int64_t p = 0; p < head.features; ++p) {
      const T qp = head.q[p];
      for (int g = 0; g < Group; ++g)
        for (int v = 0; v < Vecs; ++v) sums[g][v] += qp * load<Bytes>(keys + g * tile_size + p * kKeyTile + v * W);
    }
    for (int g = 0; g < Group; ++g)
      for (int v = 0; v < Vecs; ++v) store(head.scores + position + g * kKeyTile + v * W, sums[g][v]);
  }

  // scores[j] <- scale scores[j] + log_decay (t - j) + clipped[min(t - j, clip)] for j <= t; the
  // largest of them. Vectors up to far_end (one clipped term for all), the rest one by one.
  template <int Bytes, typename T>
  static SPE_INLINE T bias_and_max(const SoftmaxHead<T>& head, int64_t far_end) {
    constexpr int64_t W = kLanes<T, Bytes>;
    const int64_t t = head.length - 1;
    const T far_bias = head.clipped ? head.clipped[head.clip] : T(0);
    Vec<T, Bytes> lanes{}, tops = splat<Bytes>(-std::numeric_limits<T>::infinity());
    for (int64_t l = 0; l < W; ++l) lanes[l] = static_cast<T>(l);
    int64_t j = 0;
    for (; j + W <= far_end; j += W) {
      const Vec<T, Bytes> lag = static_cast<T>(t - j) - lanes;
      const Vec<T, Bytes> s = head.scale * load<Bytes>(head.scores + j) + head.log_decay * lag + far_bias;
      store(head.scores + j, s);
      tops = s > tops ? s : tops;
    }
    T top = lane_max(tops);
    for (; j <= t; ++j) {
      const int64_t lag = t - j;
      T s = head.scale * head.scores[j] + head.log_decay * static_cast<T>(lag);
      if (head.clipped) s += head.clipped[std::min(lag, head.clip)];
      head.scores[j] = s;
      top = std::max(top, s);
    }
    return top;
  }

  // scores[j] <- exp(scores[j] - top) for begin <= j < end; their sum. The last partial vector
  // through a padded copy (exp(-inf) = 0).
  template <int Bytes, typename T>
  static SPE_INLINE T exp_and_sum(T* scores, int64_t begin, int64_t end, T top) {
    constexpr int64_t W = kLanes<T, Bytes>;
    Vec<T, Bytes> sums{};
    int64_t j = begin;
    for (; j + W <= end; j += W) {
      const Vec<T, Bytes> e = exp_lanes<Bytes>(load<Bytes>(scores + j) - top);
      store(scores + j, e);
      sums += e;
    }
    if (j < end) {
      T padded[W];
      std::fill(padded, padded + W, -std::numeric_limits<T>::infinity());
      std::copy(scores + j, scores + end, padded);
      const Vec<T, Bytes> e = exp_lanes<Bytes>(load<Bytes>(padded) - top);
      store(padded, e);
      std::copy(padded, padded + (end - j), scores + j);
      sums += e;
    }
    return lane_sum(sums);
  }

  // out = inverse sum_j scores[j] values[j]: blocks of four vectors of the Dv columns, then one
  // block of the 1-3 whole vectors left (each block one pass over the values), two positions at a
  // time (independent chains); the columns left one by one.
  template <int Bytes, typename T>
  static SPE_INLINE void value_sums(const SoftmaxHead<T>& head, T inverse) {
    constexpr int64_t W = kLanes<T, Bytes>;
    const int64_t Dv = head.value_dim;
    int64_t column = 0;
    for (; column + 4 * W <= Dv; column += 4 * W) value_block<4, Bytes>(head, column, inverse);
    const int64_t vectors_left = (Dv - column) / W;
    if (vectors_left == 3) value_block<3, Bytes>(head, column, inverse);
    if (vectors_left == 2) value_block<2, Bytes>(head, column, inverse);
    if (vectors_left == 1) value_block<1, Bytes>(head, column, inverse);
    column += vectors_left * W;
    for (; column < Dv; ++column) {
      T sum = 0;
      for (int64_t j = 0; j < head.length; ++j) sum += head.scores[j] * head.values[j * Dv + column];
      head.out[column] = sum * inverse;
    }
  }

  template <int Vecs, int Bytes, typename T>
  static SPE_INLINE void value_block(const SoftmaxHead<T>& head, int64_t column, T inverse) {
    constexpr int64_t W = kLanes<T, Bytes>;
    const int64_t Dv = head.value_dim;
    const T* values = head.values + column;
    Vec<T, Bytes> even[Vecs] = {}, odd[Vecs] = {};
    int64_t j = 0;
    for (; j + 2 <= head.length; j += 2)
      for (int v = 0; v < Vecs; ++v) {
        even[v] += head.scores[j] * load<Bytes>(values + j * Dv + v * W);
        odd[v] += head.scores[j + 1] * load<Bytes>(values + (j + 1) * Dv + v * W);
      }
    if (j < head.length)
      for (int v = 0; v < Vecs; ++v) even[v] += head.scores[j] * load<Bytes>(values + j * Dv + v * W);
    for (int v = 0; v < Vecs; ++v) store(head.out + column + v * W, (even[v] + odd[v]) * inverse);
  }
};

}  // namespace

template <typename T>
void rows_by_weight(int64_t m, int64_t k, int64_t n, const T* x, const T* w, const T* bias, T* y, int threads) {
  const Isa isa = best_isa();
  if (threads <= 1 || n < 2 * RowsByWeight::kOutputs) return run_for_isa<RowsByWeight>(isa, m, k, n, x, w, bias, y, 0, n);
  // Each thread a run of whole blocks of outputs: its own rows of the weight.
  const int64_t blocks = (n + RowsByWeight::kOutputs - 1) / RowsByWeight::kOutputs;
#pragma omp parallel num_threads(threads)
  {
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    const int64_t begin = std::min(n, blocks * part / parts * RowsByWeight::kOutputs);
    const int64_t end = part + 1 == parts ? n : std::min(n, blocks * (part + 1) / parts * RowsByWeight::kOutputs);
    run_for_isa<RowsByWeight>(isa, m, k, n, x, w, bias, y, begin, end);
  }
}

template <typename T>
void layer_norm_rows(int64_t m, int64_t n, const T* x, const T* gamma, const T* beta, double eps, T* y) {
  for (int64_t i = 0; i < m; ++i) {
    const T* row = x + i * n;
    double mean = 0.0, square = 0.0;
    for (int64_t j = 0; j < n; ++j) mean += static_cast<double>(row[j]);
    mean /= static_cast<double>(n);
    for (int64_t j = 0; j < n; ++j) {
      const double centred = static_cast<double>(row[j]) - mean;
      square += centred * centred;
    }
    const double inverse_sd = 1.0 / std::sqrt(square / static_cast<double>(n) + eps);
    for (int64_t j = 0; j < n; ++j)
      y[i * n + j] = static_cast<T>((static_cast<double>(row[j]) - mean) * inverse_sd) * gamma[j] + beta[j];
  }
}

template <typename T>
void gelu_in_place(int64_t n, T* x) {
  constexpr T kInverseRoot2 = static_cast<T>(0.70710678118654752440);
  for (int64_t i = 0; i < n; ++i) x[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * kInverseRoot2));
}

template <typename T>
void feature_map_in_place(bool elu_plus_one, int64_t n, T* x) {
  if (elu_plus_one)
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] > T(0) ? x[i] + T(1) : std::exp(x[i]);  // elu(x) + 1
  else
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] > T(0) ? x[i] : T(0);
}

template <typename T>
void favor_features(int64_t rows, int64_t dim, int64_t features, const T* x, const T* w, double scale, bool query,
                    double key_shift, T* out) {
  rows_by_weight<T>(rows, dim, features, x, w, nullptr, out);  // x . w_m
  const T inverse_root = static_cast<T>(1.0 / std::sqrt(static_cast<double>(features)));
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * dim;
    T* phi = out + r * features;
    T square = 0;
    for (int64_t j = 0; j < dim; ++j) square += row[j] * row[j];
    const T half_square = static_cast<T>(scale * scale) * square / T(2);
    T shift = static_cast<T>(key_shift);
    for (int64_t m = 0; m < features; ++m) phi[m] = static_cast<T>(scale) * phi[m] - half_square;
    if (query) shift = *std::max_element(phi, phi + features);
    for (int64_t m = 0; m < features; ++m) phi[m] = std::exp(phi[m] - shift) * inverse_root;
  }
}

template <typename T>
void rotate_pairs(int64_t rows, int64_t dim, const T* cos, const T* sin, T* x) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim / 2; ++i) {
      T* pair = x + r * dim + 2 * i;
      const T even = pair[0], odd = pair[1];
      pair[0] = even * cos[i] - odd * sin[i];
      pair[1] = even * sin[i] + odd * cos[i];
    }
}

SineOscillators::SineOscillators(int64_t features, int64_t sines, const double* frequencies, const double* offsets)
    : features_(features), sines_(sines), frequencies_(frequencies, frequencies + features * sines) {
  const size_t n = frequencies_.size();
  step_cos_.resize(n), step_sin_.resize(n), offset_cos_.resize(n), offset_sin_.resize(n), cos_.resize(n), sin_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    step_cos_[i] = std::cos(2.0 * M_PI * frequencies_[i]), step_sin_[i] = std::sin(2.0 * M_PI * frequencies_[i]);
    offset_cos_[i] = std::cos(offsets[i]), offset_sin_[i] = std::sin(offsets[i]);
  }
}

template <typename T>
void SineOscillators::coefficients(int64_t position, T* out) {
  const size_t n = frequencies_.size();
  if (position != last_ + 1 || position % kExactEvery == 0) {
    for (size_t i = 0; i < n; ++i) {
      const double phase = 2.0 * M_PI * frequencies_[i] * static_cast<double>(position);
      cos_[i] = std::cos(phase), sin_[i] = std::sin(phase);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      const double c = cos_[i], s = sin_[i];
      cos_[i] = c * step_cos_[i] - s * step_sin_[i], sin_[i] = s * step_cos_[i] + c * step_sin_[i];
    }
  }
  last_ = position;
  const int64_t row = 2 * sines_ + 1;
  for (int64_t f = 0; f < features_; ++f) {
    T *query = out + f * row, *key = out + (features_ + f) * row;
    for (int64_t k = 0; k < sines_; ++k) {
      const size_t i = static_cast<size_t>(f * sines_ + k);
      key[2 * k] = static_cast<T>(cos_[i]), key[2 * k + 1] = static_cast<T>(sin_[i]);
      query[2 * k] = static_cast<T>(cos_[i] * offset_cos_[i] - sin_[i] * offset_sin_[i]);
      query[2 * k + 1] = static_cast<T>(sin_[i] * offset_cos_[i] + cos_[i] * offset_sin_[i]);
    }
    query[2 * sines_] = key[2 * sines_] = T(1);
  }
}

template <typename T>
void linear_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, const T* phi_q,
                           const T* phi_k, const T* v, const T* decay, double eps, T* kv, T* z, T* out,
                           const NumeratorFeatures<T>& numerator) {
  const int64_t M = features, Dv = value_dim;
  const bool positioned = numerator.query != nullptr;
  const int64_t P = positioned ? numerator.features : M;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t bh = b * heads + h;
      const T g = decay ? decay[h] : T(1);
      const T *q = phi_q + bh * M, *k = phi_k + bh * M, *vh = v + bh * Dv;
      const T *psi_q = positioned ? numerator.query + bh * P : q, *psi_k = positioned ? numerator.key + bh * P : k;
      T *state = kv + bh * P * Dv, *norm = z + bh * M, *o = out + bh * Dv;
      T denominator = 0;
      for (int64_t m = 0; m < M; ++m) {
        norm[m] = g * norm[m] + k[m];
        denominator += q[m] * norm[m];
      }
      for (int64_t i = 0; i < Dv; ++i) o[i] = T(0);
      for (int64_t p = 0; p < P; ++p) {
        T* row = state + p * Dv;
        for (int64_t i = 0; i < Dv; ++i) row[i] = g * row[i] + psi_k[p] * vh[i];
        for (int64_t i = 0; i < Dv; ++i) o[i] += psi_q[p] * row[i];
      }
      const T scale = T(1) / std::max(denominator, static_cast<T>(eps));
      for (int64_t i = 0; i < Dv; ++i) o[i] *= scale;
    }
}

template <typename T>
void toeplitz_linear_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, int64_t clip,
                                    int64_t t, const T* phi_q, const T* phi_k, const T* v, const T* lag_weights,
                                    double eps, T* key_ring, T* value_ring, T* kv, T* z, T* out) {
  const int64_t M = features, Dv = value_dim, slot = t % clip, window = std::min(t + 1, clip);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t bh = b * heads + h;
      const T *q = phi_q + bh * M, *w = lag_weights + h * (clip + 1);
      T *keys = key_ring + bh * clip * M, *values = value_ring + bh * clip * Dv;
      T *state = kv + bh * M * Dv, *norm = z + bh * M, *o = out + bh * Dv;
      if (t >= clip) {  // position t - clip, in this slot, reaches lag clip
        const T *k_old = keys + slot * M, *v_old = values + slot * Dv;
        for (int64_t m = 0; m < M; ++m) {
          norm[m] += k_old[m];
          for (int64_t i = 0; i < Dv; ++i) state[m * Dv + i] += k_old[m] * v_old[i];
        }
      }
      std::copy(phi_k + bh * M, phi_k + (bh + 1) * M, keys + slot * M);
      std::copy(v + bh * Dv, v + (bh + 1) * Dv, values + slot * Dv);
      // the far sums, weighted by lag clip's weight
      T denominator = 0;
      for (int64_t i = 0; i < Dv; ++i) o[i] = T(0);
      for (int64_t m = 0; m < M; ++m) {
        denominator += q[m] * norm[m];
        for (int64_t i = 0; i < Dv; ++i) o[i] += q[m] * state[m * Dv + i];
      }
      denominator *= w[clip];
      for (int64_t i = 0; i < Dv; ++i) o[i] *= w[clip];
      for (int64_t d = 0; d < window; ++d) {  // the window, lag by lag
        const int64_t s = (t - d) % clip;
        T score = 0;
        for (int64_t m = 0; m < M; ++m) score += q[m] * keys[s * M + m];
        score *= w[d];
        denominator += score;
        for (int64_t i = 0; i < Dv; ++i) o[i] += score * values[s * Dv + i];
      }
      const T scale = T(1) / std::max(denominator, static_cast<T>(eps));
      for (int64_t i = 0; i < Dv; ++i) o[i] *= scale;
    }
}

template <typename T>
void softmax_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, int64_t length,
                            int64_t capacity, const T* q, const T* keys, const T* values, double scale,
                            const LagBias<T>& bias, T* scores, T* out) {
  const Isa isa = best_isa();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t bh = b * heads + h;
      const SoftmaxHead<T> head{features,
                                value_dim,
                                length,
                                q + bh * features,
                                keys + bh * capacity * features,
                                values + bh * capacity * value_dim,
                                static_cast<T>(scale),
                                bias.log_decay ? bias.log_decay[h] : T(0),
                                bias.clipped ? bias.clipped + bh * (bias.clip + 1) : nullptr,
                                bias.clip,
                                bias.lag_weights ? bias.lag_weights + bh * (bias.clip + 1) : nullptr,
                                scores,
                                out + bh * value_dim};
      run_for_isa<SoftmaxHeadStep>(isa, head);
    }
}

#define SPE_INSTANTIATE(T)                                                                                          \
  template void rows_by_weight<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*, int);                \
  template void layer_norm_rows<T>(int64_t, int64_t, const T*, const T*, const T*, double, T*);                      \
  template void gelu_in_place<T>(int64_t, T*);                                                                       \
  template void feature_map_in_place<T>(bool, int64_t, T*);                                                          \
  template void favor_features<T>(int64_t, int64_t, int64_t, const T*, const T*, double, bool, double, T*);           \
  template void rotate_pairs<T>(int64_t, int64_t, const T*, const T*, T*);                                           \
  template void SineOscillators::coefficients<T>(int64_t, T*);                                                       \
  template void linear_attention_step<T>(int64_t, int64_t, int64_t, int64_t, const T*, const T*, const T*, const T*, \
                                         double, T*, T*, T*, const NumeratorFeatures<T>&); \
  template void toeplitz_linear_attention_step<T>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const T*,    \
                                                  const T*, const T*, const T*, double, T*, T*, T*, T*, T*);          \
  template void softmax_attention_step<T>(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, const T*, \
                                          const T*, double, const LagBias<T>&, T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
