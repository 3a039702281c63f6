#pragma once
// The pieces of one decoding step of a causal linear-attention language model (nn/fused_decoder),
// on raw row-major buffers (no LibTorch types): one position of B sequences, nothing allocated.
// Each equals, in exact arithmetic, the LibTorch operation the op-by-op step runs.
#include <cstdint>
#include <vector>

namespace spe::kernels::cpu {

// y (m, n) = x (m, k) w^T + bias (n; null: none): a linear layer, its weight w (n, k) as LibTorch
// stores it (out x in), read once in order, in vectors of the CPU's instruction set; `threads`
// OpenMP threads each take a run of the outputs (a second core adds memory bandwidth to weights
// larger than the caches).
template <typename T>
void rows_by_weight(int64_t m, int64_t k, int64_t n, const T* x, const T* w, const T* bias, T* y, int threads = 1);

// y (m, n) = LayerNorm of each row of x (biased variance, eps inside the root), scaled by gamma
// and shifted by beta (n each). y may be x.
template <typename T>
void layer_norm_rows(int64_t m, int64_t n, const T* x, const T* gamma, const T* beta, double eps, T* y);

// x <- 0.5 x (1 + erf(x / sqrt 2)) (the exact GELU), n values.
template <typename T>
void gelu_in_place(int64_t n, T* x);

// x <- elu(x) + 1 (elu_plus_one) or relu(x), n values.
template <typename T>
void feature_map_in_place(bool elu_plus_one, int64_t n, T* x);

// FAVOR+ features of `rows` rows x (F values each): with logits[m] = scale x . w_m - scale^2 |x|^2 / 2
// over the M rows of w (M, F), phi[m] = exp(logits[m] - shift) / sqrt(M), where shift is the row's
// largest logit (queries) or `key_shift` (keys: a constant). out (rows, M).
template <typename T>
void favor_features(int64_t rows, int64_t dim, int64_t features, const T* x, const T* w, double scale, bool query,
                    double key_shift, T* out);

// Rotary at one position: each of `rows` rows of `dim` features (pairs (2i, 2i + 1)) rotated by
// the pair's angle: (x0, x1) <- (x0 cos_i - x1 sin_i, x0 sin_i + x1 cos_i); cos, sin (dim / 2).
template <typename T>
void rotate_pairs(int64_t rows, int64_t dim, const T* cos, const T* sin, T* x);

// sineSPE's oscillators position after position, for the one-position filter: for `features` =
// H D features of K sines each, coefficients (2, features, 2K + 1) of position n: [cos, sin of
// 2 pi f n + theta]; 1 for the queries, then the same with theta = 0 for the keys. Phases in
// float64 (frequencies and offsets (features, K)). The next position's oscillators are the last
// ones turned by 2 pi f (a product by a fixed rotation, no sine or cosine computed), and the
// queries' are the keys' turned by theta; every kExactEvery positions, and for any position that
// is not the next, they are computed from the phase itself, so that rounding cannot pile up.
class SineOscillators {
 public:
  static constexpr int64_t kExactEvery = 256;
  SineOscillators(int64_t features, int64_t sines, const double* frequencies, const double* offsets);
  template <typename T>
  void coefficients(int64_t position, T* out);

 private:
  int64_t features_, sines_, last_ = -2;
  std::vector<double> frequencies_, step_cos_, step_sin_, offset_cos_, offset_sin_, cos_, sin_;  // (features, K)
};

// The numerator's own features when positions act on phi(q), phi(k) (place features): psi_q,
// psi_k (B, H, P). Null: the numerator reads phi_q, phi_k (P = M).
template <typename T>
struct NumeratorFeatures {
  int64_t features = 0;
  const T* query = nullptr;
  const T* key = nullptr;
};

// One causal linear-attention step for B H heads: the state decays by decay[h] (null: no decay),
// absorbs (psi_k, v) and phi_k, then is read with psi_q and phi_q:
//   kv[b, h] <- g_h kv[b, h] + psi_k[b, h] v[b, h]^T   (P x Dv)      z[b, h] <- g_h z[b, h] + phi_k[b, h]
//   out[b, h] = psi_q[b, h]^T kv[b, h] / max(phi_q[b, h] . z[b, h], eps)
// phi_q, phi_k (B, H, M), v and out (B, H, Dv), kv (B, H, P, Dv), z (B, H, M); decay (H); psi as
// `numerator` gives them (phi itself by default).
template <typename T>
void linear_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, const T* phi_q,
                           const T* phi_k, const T* v, const T* decay, double eps, T* kv, T* z, T* out,
                           const NumeratorFeatures<T>& numerator = {});

// One step of causal linear attention under a clipped Toeplitz bias at position t: the keys and
// values of the last `clip` positions sit in rings (position p in slot p mod clip), older ones in
// the far sums (kv, z as linear_attention_step's). The step moves position t - clip's key and
// value into the far sums (t >= clip), writes its own into the rings, then reads
//   out = (sum_{d < min(t + 1, clip)} w_d (phi_q . k_{t-d}) v_{t-d} + w_clip phi_q^T kv)
//         / max(sum_d w_d phi_q . k_{t-d} + w_clip phi_q . z, eps)
// with w_d = lag_weights[h, d] (H, clip + 1): e^(bias of lag d), lag clip for everything farther.
// phi_q, phi_k (B, H, M), v and out (B, H, Dv); rings (B, H, clip, M) and (B, H, clip, Dv).
template <typename T>
void toeplitz_linear_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, int64_t clip,
                                    int64_t t, const T* phi_q, const T* phi_k, const T* v, const T* lag_weights,
                                    double eps, T* key_ring, T* value_ring, T* kv, T* z, T* out);

// The score terms of lag d = t - j >= 0 a softmax step adds: log_decay[h] d (decay; null: none)
// and clipped[b, h, min(d, clip)] (a Toeplitz bias's lags 0 .. clip, or Shaw's q . a^K of each
// lag, scaled; (B, H, clip + 1); null: none). With lag_weights (B, H, clip + 1), the step also
// writes the softmax weights summed over the keys of each clipped lag (Shaw's value term).
template <typename T>
struct LagBias {
  const T* log_decay = nullptr;
  const T* clipped = nullptr;
  int64_t clip = 0;
  T* lag_weights = nullptr;
};

// Softmax's key cache holds each head's keys in tiles of kKeyTile positions, feature-major inside
// a tile: (capacity / kKeyTile, P, kKeyTile) per head, so that the scores of a tile's positions
// are vector multiply-adds (one feature of kKeyTile keys per vector load) with no sums across
// lanes. key_offset: where feature p of position j sits in one head's cache.
constexpr int64_t kKeyTile = 16;
inline int64_t key_offset(int64_t position, int64_t feature, int64_t features) {
  return (position / kKeyTile * features + feature) * kKeyTile + position % kKeyTile;
}

// One softmax-attention step for B H heads, the position's key and value already in the caches
// at row t = length - 1:
//   s_j = scale q[b, h] . keys[b, h, j] + bias(t - j),   out[b, h] = sum_j softmax(s)_j values[b, h, j]   (j <= t)
// q (B, H, P), keys (B, H, capacity / kKeyTile, P, kKeyTile) as key_offset places them (the
// positions of the last tile past t must hold finite values: zeros), values (B, H, capacity, Dv),
// out (B, H, Dv); capacity a multiple of kKeyTile; scores: room for `capacity` values. Vectors of
// the CPU's instruction set throughout (scores, exp, value sums).
template <typename T>
void softmax_attention_step(int64_t batch, int64_t heads, int64_t features, int64_t value_dim, int64_t length,
                            int64_t capacity, const T* q, const T* keys, const T* values, double scale,
                            const LagBias<T>& bias, T* scores, T* out);

}  // namespace spe::kernels::cpu
