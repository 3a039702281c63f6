#include "sine_spe_filter.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"

namespace spe::kernels::cpu {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr int64_t kResync = 1024;  // positions between exact evaluations of the oscillators
constexpr int64_t kTile = 16;      // positions whose codes (and gradients) are built together; a
                                   // multiple of every vector's lanes (the backward keeps positions in lanes)

// cos and sin of 2 pi f_i n + theta_i (i < count: the (d, k) of a head) at the kTile positions of
// a tile, positions in lanes. A tile's first position is evaluated exactly every kResync
// positions and otherwise rotated by kTile steps from the previous tile's; the lanes are rotations
// of it by 0 .. kTile - 1 steps (exact rotations, computed once), so rounding never accumulates
// over more than kResync positions.
struct TileOscillators {
  const double* f;
  const double* theta;
  int64_t count;
  std::vector<double> cos_first, sin_first;  // (count): at the tile's first position
  std::vector<double> cos_jump, sin_jump;    // (count): of the rotation by kTile positions
  std::vector<double> cos_lane, sin_lane;    // (count, kTile): of the rotations by 0 .. kTile - 1
  std::vector<float> cos_lane32, sin_lane32;  // the same in float32, for float32 tiles

  // n oscillators for a block of `positions` positions: the lanes and the jump that the block
  // can use are computed, the others stay 0 (a one-position block, decoding, needs neither).
  TileOscillators(const double* frequencies, const double* phases, int64_t n, int64_t positions)
      : f(frequencies), theta(phases), count(n), cos_first(n), sin_first(n), cos_jump(n), sin_jump(n),
        cos_lane(n * kTile), sin_lane(n * kTile) {
    const int64_t lanes = std::min(kTile, positions);
    for (int64_t i = 0; i < count; ++i) {
      if (positions > kTile) {
        cos_jump[i] = std::cos(kTwoPi * f[i] * kTile);
        sin_jump[i] = std::sin(kTwoPi * f[i] * kTile);
      }
      cos_lane[i * kTile] = 1.0;  // the rotation by 0 steps
      for (int64_t t = 1; t < lanes; ++t) {
        cos_lane[i * kTile + t] = std::cos(kTwoPi * f[i] * static_cast<double>(t));
        sin_lane[i * kTile + t] = std::sin(kTwoPi * f[i] * static_cast<double>(t));
      }
    }
    cos_lane32.assign(cos_lane.begin(), cos_lane.end());
    sin_lane32.assign(sin_lane.begin(), sin_lane.end());
  }
  template <typename T>
  const T* cos_lanes() const {
    if constexpr (std::is_same_v<T, float>) return cos_lane32.data();
    else return cos_lane.data();
  }
  template <typename T>
  const T* sin_lanes() const {
    if constexpr (std::is_same_v<T, float>) return sin_lane32.data();
    else return sin_lane.data();
  }
  // Moves to the tile starting at `position`, kTile positions after the previous one unless
  // steps_since_exact is a multiple of kResync.
  void move_to(int64_t position, int64_t steps_since_exact) {
    if (steps_since_exact % kResync == 0) {
      for (int64_t i = 0; i < count; ++i) {
        const double phase = kTwoPi * f[i] * static_cast<double>(position) + theta[i];
        cos_first[i] = std::cos(phase);
        sin_first[i] = std::sin(phase);
      }
      return;
    }
    for (int64_t i = 0; i < count; ++i) {
      const double c = cos_first[i] * cos_jump[i] - sin_first[i] * sin_jump[i];
      sin_first[i] = sin_first[i] * cos_jump[i] + cos_first[i] * sin_jump[i];
      cos_first[i] = c;
    }
  }
};
static_assert(kResync % kTile == 0, "exact evaluations fall on tile starts");

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

// The coefficients of one tile of `count` positions from first (the block began at blk.begin):
// coeffs (D, rows, kTile), positions in lanes, for each d the rows Omega_j (cos, sin of each
// sine: 2K), then, when rows > 2K, a row of ones and the rows n Omega_j. Absent positions
// (lanes from count on) are zero. The tile's first position is turned in float64; its lanes in
// T (float32 tiles: twice the lanes per vector, the rounding of the stored values).
template <class Tile, typename T>
SPE_INLINE void fill_coefficients(TileOscillators& osc, const SineFilterShape& s, const Block& blk, int64_t first,
                                  int64_t count, int64_t rows, T* coeffs) {
  using Reals = Vec<T, Tile::bytes>;
  constexpr int64_t W = kLanes<T, Tile::bytes>, V = kTile / W;  // V vectors of W positions
  const int64_t K = s.sines, J = 2 * K;
  osc.move_to(s.first_position + first, first - blk.begin);
  Reals present[V] = {}, position[V] = {};  // 1 or 0; n, or 0 when absent
  for (int64_t v = 0; v < V; ++v)
    for (int64_t l = 0; l < W; ++l) {
      const int64_t t = v * W + l;
      present[v][l] = t < count ? T(1) : T(0);
      position[v][l] = t < count ? static_cast<T>(s.first_position + first + t) : T(0);
    }
  const T *cos_lanes = osc.cos_lanes<T>(), *sin_lanes = osc.sin_lanes<T>();
  for (int64_t d = 0; d < s.dim; ++d) {
    T* out = coeffs + d * rows * kTile;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = d * K + k;
      const T c0 = static_cast<T>(osc.cos_first[i]), s0 = static_cast<T>(osc.sin_first[i]);
      for (int64_t v = 0; v < V; ++v) {
        const Reals cl = load<Tile::bytes>(cos_lanes + i * kTile + v * W);
        const Reals sl = load<Tile::bytes>(sin_lanes + i * kTile + v * W);
        const Reals cos = (c0 * cl - s0 * sl) * present[v], sin = (s0 * cl + c0 * sl) * present[v];
        store(out + 2 * k * kTile + v * W, cos);
        store(out + (2 * k + 1) * kTile + v * W, sin);
        if (rows > J) {
          store(out + (J + 1 + 2 * k) * kTile + v * W, position[v] * cos);
          store(out + (J + 2 + 2 * k) * kTile + v * W, position[v] * sin);
        }
      }
    }
    if (rows > J)
      for (int64_t v = 0; v < V; ++v) store(out + J * kTile + v * W, present[v]);
  }
}

// Positions kept together (codes, gradients of codes: D x R each) are this many values apart: one
// cache line more than D R, so that the rows of one d at successive positions do not all fall in
// the same cache set (D R floats are 16 KB at D = R = 64).
int64_t position_stride(const SineFilterShape& s) { return s.dim * s.realizations + 16; }

// The codes (count, D, R) of `count` positions (position_stride apart) from their coefficients
// (D, 2K, kTile): for each d, code_d (count x R) = c_d + Omega_d^T (count x 2K) (a_d W_d).
template <class Tile, typename T>
SPE_INLINE void build_codes(const SineFilterShape& s, const HeadCode<T>& hc, const T* coeffs, int64_t count, T* codes,
                            std::vector<T>& scratch) {
  const int64_t D = s.dim, J = 2 * s.sines, R = s.realizations;
  for (int64_t d = 0; d < D; ++d)
    small_gemm<Tile>(true, false, count, R, J, coeffs + d * J * kTile, kTile, hc.scaled_weights.data() + d * J * R, R,
                     false, codes + d * R, position_stride(s), scratch, hc.shift + d * R);
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
  TileOscillators osc(freq + h * D * K, phase + h * D * K, D * K, blk.end - blk.begin);
  const int64_t most = std::min(kTile, blk.end - blk.begin);  // positions per tile
  const int64_t ld = position_stride(s);
  std::vector<T> codes(most * ld), coeffs(D * 2 * K * kTile), scratch;
  const int64_t batch_stride = s.length * H;  // x[b, n, h] at x + (b * batch_stride + n * H + h) * D
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += kTile) {
    const int64_t tile = std::min(kTile, blk.end - t0);
    const int64_t next = std::min(kTile, blk.end - t0 - kTile);  // positions in the next tile
    prefetch_positions(s, h, t0 + kTile, next, x, D);
    prefetch_positions<true>(s, h, t0 + kTile, next, out, R);
    fill_coefficients<Tile>(osc, s, blk, t0, tile, 2 * K, coeffs.data());
    build_codes<Tile>(s, hc, coeffs.data(), tile, codes.data(), scratch);
    for (int64_t t = 0; t < tile; ++t) {  // out_t (B x R) = x_t (B x D) code_t (D x R)
      const int64_t row0 = (t0 + t) * H + h;
      small_gemm<Tile>(false, false, s.batch, R, D, x + row0 * D, batch_stride * D, codes.data() + t * ld, R,
                       false, out + row0 * R, batch_stride * R, scratch);
    }
  }
}

// The sums over a block's positions n of grad_code_d(n) (R) times Omega(n), 1 and n Omega(n), for
// each d: (D, 2K + 1 + 2K, R). The gradients of every code parameter follow from them
// (set_feature_gradients), so the backward's only per-position products are GEMMs.
template <typename T>
struct Moments {
  std::vector<T> sums;
  explicit Moments(const SineFilterShape& s) : sums(s.dim * moment_rows(s) * s.realizations) {}
  static int64_t moment_rows(const SineFilterShape& s) { return 4 * s.sines + 1; }
};

// One head's code parameters for the backward's transposed codes: (D, R, 2K + 1), the row
// (a_d W_d[:, r], c_d[r]) for each d and r, so that code_d^T (R x tile) is this times
// [Omega; 1] (2K + 1 x tile).
template <typename T>
std::vector<T> transposed_code_weights(const SineFilterShape& s, int64_t h, const T* weights, const T* gate_scale,
                                       const T* gate_shift) {
  const int64_t D = s.dim, J = 2 * s.sines, R = s.realizations;
  std::vector<T> out(D * R * (J + 1));
  for (int64_t d = 0; d < D; ++d) {
    const T a = gate_scale[h * D + d];
    const T* w = weights + (h * D + d) * J * R;
    for (int64_t r = 0; r < R; ++r) {
      T* row = out.data() + (d * R + r) * (J + 1);
      for (int64_t j = 0; j < J; ++j) row[j] = a * w[j * R + r];
      row[J] = gate_shift[(h * D + d) * R + r];
    }
  }
  return out;
}

// Backward over a block, kTile positions at a time, with positions in vector lanes where each
// has its own matrices; every product register-blocked:
//   code_d^T (R x tile) = [a_d W_d^T, c_d] [Omega_d; 1]   (GEMM per d)
//   grad_x_t = g_t code_t^T                                  (lane-wise, positions in lanes)
//   grad_code_t (D x R) = x_t^T g_t                          (GEMM per position)
//   moments_d += [Omega; 1; n Omega]_d^T grad_code_d         (GEMM per d)
// The tile's positions are padded with zeros to kTile lanes.
template <class Tile, typename T>
SPE_INLINE void backward_block(const SineFilterShape& s, const Block& blk, const T* x, const double* freq,
                               const double* phase, const T* weights, const T* gate_scale, const T* gate_shift,
                               const T* grad_out, T* grad_x, Moments<T>& moments) {
  constexpr int64_t L = kTile;  // lanes of positions
  const int64_t H = s.heads, D = s.dim, K = s.sines, J = 2 * K, R = s.realizations, B = s.batch, h = blk.head;
  const int64_t rows = Moments<T>::moment_rows(s);  // of coeffs: Omega (2K), 1, n Omega (2K)
  const std::vector<T> code_weights = transposed_code_weights(s, h, weights, gate_scale, gate_shift);
  TileOscillators osc(freq + h * D * K, phase + h * D * K, D * K, blk.end - blk.begin);
  const int64_t ld = position_stride(s);
  std::vector<T> grad_code(L * ld);                    // (tile, D, R), positions ld apart
  std::vector<T> xs(L * B * D), gs(L * B * R);          // the tile's x_t (B x D) and g_t (B x R)
  std::vector<T> coeffs(D * rows * L), codes_lanes(D * R * L), scratch;  // (D, rows, L); code^T (D, R, L)
  std::vector<T> g_lanes(B * R * L), grad_x_lanes(B * D * L);           // g^T (B, R, L); grad_x^T (B, D, L)
  const int64_t batch_stride = s.length * H;
  for (int64_t t0 = blk.begin; t0 < blk.end; t0 += L) {
    const int64_t tile = std::min(L, blk.end - t0);
    fill_coefficients<Tile>(osc, s, blk, t0, tile, rows, coeffs.data());
    if (tile < L) std::fill(g_lanes.begin(), g_lanes.end(), T(0));  // the lanes of absent positions
    for (int64_t d = 0; d < D; ++d)
      small_gemm<Tile>(false, false, R, L, J + 1, code_weights.data() + d * R * (J + 1), J + 1,
                       coeffs.data() + d * rows * L, L, false, codes_lanes.data() + d * R * L, L, scratch);
    // Copied together first: the rows of one head are 2 KB apart in x and grad_out, and the
    // batch's rows of one position megabytes apart (the same cache sets).
    for (int64_t t = 0; t < tile; ++t)
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = b * batch_stride + (t0 + t) * H + h;
        std::copy_n(x + row * D, D, xs.data() + (t * B + b) * D);
        std::copy_n(grad_out + row * R, R, gs.data() + (t * B + b) * R);
      }
    for (int64_t b = 0; b < B; ++b)
      transpose<Tile::bytes>(tile, R, gs.data() + b * R, B * R, g_lanes.data() + b * R * L, L);
    for (int64_t t = 0; t < tile; ++t)
      small_gemm<Tile>(true, false, D, R, B, xs.data() + t * B * D, D, gs.data() + t * B * R, R, false,
                       grad_code.data() + t * ld, R, scratch);
    for (int64_t lane = 0; lane < L; lane += kLanes<T, Tile::bytes>)
      lanewise_gemm<Tile>(B, D, R, g_lanes.data() + lane, R * L, codes_lanes.data() + lane, R * L, L,
                          grad_x_lanes.data() + lane, D * L, L);
    for (int64_t b = 0; b < B; ++b)
      transpose<Tile::bytes>(D, tile, grad_x_lanes.data() + b * D * L, L,
                             grad_x + (b * batch_stride + t0 * H + h) * D, H * D);
    for (int64_t d = 0; d < D; ++d)  // grad_code_d (tile x R), rows ld apart
      small_gemm<Tile>(false, false, rows, R, tile, coeffs.data() + d * rows * L, L, grad_code.data() + d * R, ld, true,
                       moments.sums.data() + d * rows * R, R, scratch);
  }
}

// The kernels for run_for_isa (dispatch.h).
struct ForwardBlock {
  template <class Tile, typename T>
  static SPE_INLINE void run(const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                             const T* w, const T* a, const T* c, T* o) {
    forward_block<Tile>(s, b, x, f, p, w, a, c, o);
  }
};
struct BackwardBlock {
  template <class Tile, typename T>
  static SPE_INLINE void run(const SineFilterShape& s, const Block& b, const T* x, const double* f, const double* p,
                             const T* w, const T* a, const T* c, const T* g, T* gx, Moments<T>& moments) {
    backward_block<Tile>(s, b, x, f, p, w, a, c, g, gx, moments);
  }
};

// One position (decoding), one head: y (B x F) = x_b[d] times coefficients[d, j], then
// out_h (B x R) = y rows_h (F x R).
struct PositionHead {
  template <class Tile, typename T>
  static SPE_INLINE void run(const SineFilterShape& s, int64_t h, const T* x, const T* coefficients, const T* rows, T* out,
                             std::vector<T>& y, std::vector<T>& scratch) {
    const int64_t H = s.heads, D = s.dim, J1 = 2 * s.sines + 1, R = s.realizations, F = D * J1;
    const T* coef = coefficients + h * F;
    for (int64_t b = 0; b < s.batch; ++b) {
      const T* xb = x + (b * H + h) * D;
      T* yb = y.data() + b * F;
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j = 0; j < J1; ++j) yb[d * J1 + j] = xb[d] * coef[d * J1 + j];
    }
    small_gemm<Tile>(false, false, s.batch, R, F, y.data(), F, rows + h * F * R, R, false, out + h * R, H * R, scratch);
  }
};

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
      run_for_isa<ForwardBlock>(isa, s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, out);
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
      run_for_isa<BackwardBlock>(isa, s, blocks[i], x, frequencies, phases, weights, gate_scale, gate_shift, grad_out, grad_x,
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
                            grad_frequencies + (hd + d) * K, grad_phases + (hd + d) * K,
                            grad_weights + (hd + d) * 2 * K * R, grad_gate_scale[hd + d],
                            grad_gate_shift + (hd + d) * R);
  }
}

template <typename T>
void sine_spe_filter_position(const SineFilterShape& s, const T* x, const T* coefficients, const T* rows, T* out) {
  // One thread: a position's work (B H F R multiply-adds) is far below what threads pay back.
  // The buffers stay from call to call: decoding allocates nothing here after its first token.
  const Isa isa = best_isa();
  thread_local std::vector<T> y, scratch;
  y.resize(static_cast<size_t>(s.batch * s.dim * (2 * s.sines + 1)));
  for (int64_t h = 0; h < s.heads; ++h) run_for_isa<PositionHead>(isa, s, h, x, coefficients, rows, out, y, scratch);
}

#define SPE_INSTANTIATE(T)                                                                                  \
  template void sine_spe_filter_forward<T>(const SineFilterShape&, const T*, const double*, const double*,    \
                                           const T*, const T*, const T*, T*);                               \
  template void sine_spe_filter_backward<T>(const SineFilterShape&, const T*, const double*, const double*,   \
                                            const T*, const T*, const T*, const T*, T*, double*, double*, T*, \
                                            T*, T*);                                                    \
  template void sine_spe_filter_position<T>(const SineFilterShape&, const T*, const T*, const T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
