#pragma once
// Small vector primitives for the CPU kernels, written with GCC/Clang vector extensions so
// that their accumulators live in registers. Each kernel compiles them once per instruction
// set (isa.h) with that set's register width: vectors of 64 bytes for AVX-512, 32 for AVX2,
// 16 for the baseline (SSE2 on x86-64). The width must match the target: GCC lowers vectors
// wider than its registers through memory (AVX2 code on 64-byte vectors ran 7x slower).
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#define SPE_INLINE inline __attribute__((always_inline))

namespace spe::kernels::cpu {

template <typename T, int Bytes>
struct VecType {
  typedef T type __attribute__((vector_size(Bytes)));
};
template <typename T, int Bytes>
using Vec = typename VecType<T, Bytes>::type;
template <typename T, int Bytes>
constexpr int64_t kLanes = Bytes / static_cast<int64_t>(sizeof(T));

template <int Bytes, typename T>
SPE_INLINE Vec<T, Bytes> load(const T* p) {
  Vec<T, Bytes> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T, typename V>
SPE_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// The sum of a vector's lanes.
template <typename V>
SPE_INLINE auto lane_sum(const V& v) {
  auto total = v[0];
  for (size_t l = 1; l < sizeof(V) / sizeof(total); ++l) total += v[l];
  return total;
}

// sum_i a[i] b[i] (all ones when b is null: the sum of a) over n values: in vectors of W lanes,
// four independent accumulators (a scalar loop is one chain of dependent additions, which
// compilers may not reorder), then the lanes and the last values.
template <int Bytes, typename T>
SPE_INLINE T dot(const T* a, const T* b, int64_t n) {
  constexpr int64_t W = kLanes<T, Bytes>;
  Vec<T, Bytes> sums[4] = {};
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W)
    for (int u = 0; u < 4; ++u)
      sums[u] += b ? load<Bytes>(a + i + u * W) * load<Bytes>(b + i + u * W) : load<Bytes>(a + i + u * W);
  for (; i + W <= n; i += W) sums[0] += b ? load<Bytes>(a + i) * load<Bytes>(b + i) : load<Bytes>(a + i);
  T total = lane_sum((sums[0] + sums[1]) + (sums[2] + sums[3]));
  for (; i < n; ++i) total += b ? a[i] * b[i] : a[i];
  return total;
}

// A vector of W copies of value.
template <int Bytes, typename T>
SPE_INLINE Vec<T, Bytes> splat(T value) {
  return Vec<T, Bytes>{} + value;
}

// e^x in every lane (no vector exp is reachable from here: ATen's is behind its own headers).
// x = n ln 2 + r with n = round(x / ln 2) and |r| <= ln(2) / 2 (ln 2 in two parts, so that n ln 2
// is exact to the last bits of r), e^r by its Taylor series to degree 13 (float64; the first term
// left out is below 4e-18 of the sum) or 7 (float32: 5e-9), times 2^n built in the exponent's bits:
// within a few ulps of std::exp. n is read from the bits of x / ln 2 + 1.5 2^52 (or 2^23), the
// sum that also rounds it. Below -708 (float32: -87), where 2^n is no longer a normal number,
// the result is 0 (the true value is below 3e-308, 2e-38); above 709 (88) it is infinite; NaN
// stays NaN.
template <int Bytes, typename V>
SPE_INLINE V exp_lanes(V x) {
  using T = std::decay_t<decltype(x[0])>;
  static_assert(std::is_same_v<V, Vec<T, Bytes>>, "exp_lanes: a vector of Bytes bytes");
  constexpr bool kDouble = sizeof(T) == 8;
  using Bits = std::conditional_t<kDouble, int64_t, int32_t>;
  using I = Vec<Bits, Bytes>;
  constexpr int kMantissaBits = kDouble ? 52 : 23, kDegree = kDouble ? 13 : 7;
  constexpr Bits kExponentBias = kDouble ? 1023 : 127;
  constexpr T kLowest = kDouble ? T(-708) : T(-87), kHighest = kDouble ? T(709) : T(88);
  constexpr T kRounder = T(1.5) * T(Bits(1) << kMantissaBits);
  constexpr T kLog2e = T(1.44269504088896340736), kLn2High = kDouble ? T(0.693147180369123816490) : T(0.693359375),
              kLn2Low = kDouble ? T(1.90821492927058770002e-10) : T(-2.12194440e-4);
  const V clamped = x < kLowest ? splat<Bytes>(kLowest) : x > kHighest ? splat<Bytes>(kHighest) : x;
  const V shifted = clamped * kLog2e + kRounder;  // n in the low bits of its mantissa
  const V n = shifted - kRounder;
  const V r = (clamped - n * kLn2High) - n * kLn2Low;
  constexpr std::array<T, kDegree + 1> kInverseFactorials = [] {
    std::array<T, kDegree + 1> c{};
    double term = 1.0;
    for (int k = 0; k <= kDegree; ++k) c[k] = static_cast<T>(term), term /= k + 1;
    return c;
  }();
  V series = splat<Bytes>(kInverseFactorials[kDegree]);
  for (int k = kDegree - 1; k >= 0; --k) series = series * r + kInverseFactorials[k];
  const V rounder = splat<Bytes>(kRounder);
  I shifted_bits, rounder_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted);
  std::memcpy(&rounder_bits, &rounder, sizeof rounder);
  const I power_bits = (shifted_bits - rounder_bits + kExponentBias) << kMantissaBits;  // 2^n
  V power;
  std::memcpy(&power, &power_bits, sizeof power);
  const V result = series * power;
  return x < kLowest ? V{} : x > kHighest ? splat<Bytes>(std::numeric_limits<T>::infinity()) : result;
}

// The largest lane.
template <typename V>
SPE_INLINE auto lane_max(const V& v) {
  auto top = v[0];
  for (size_t l = 1; l < sizeof(V) / sizeof(top); ++l) top = v[l] > top ? v[l] : top;
  return top;
}

// Brings `rows` rows of `len` values (row i at p + i * stride) towards the cache ahead of their
// use, for rows the hardware prefetcher cannot follow (kilobytes apart, a few per page).
template <bool ForWrite = false, typename T>
SPE_INLINE void prefetch_rows(const T* p, int64_t rows, int64_t stride, int64_t len) {
  for (int64_t i = 0; i < rows; ++i) {
    const char* row = reinterpret_cast<const char*>(p + i * stride);
    for (int64_t byte = 0; byte < len * static_cast<int64_t>(sizeof(T)); byte += 64)
      __builtin_prefetch(row + byte, ForWrite ? 1 : 0, 3);
  }
}

// Register-blocked products of the small matrices of the chunked kernels (64 x 64 x 64 and
// the like), row-major: C = op(A) op(B), added to C when `accumulate`; op(A) is m x k, op(B)
// k x n. Each step of the inner loop loads Tile::vecs vectors of one row of op(B) and multiplies
// them by Tile::rows entries of op(A), so rows x vecs accumulators stay in registers. They
// replace BLAS calls there: OpenBLAS 0.3.21 runs its AVX2 kernels on AVX-512 machines, and its
// per-call cost is large at these sizes (docs/BENCHMARKS.md).

// The register blocking for an instruction set: rows x vecs accumulators, one row of op(B)
// (vecs vectors) and a broadcast must fit its registers: 32 of 64 bytes (AVX-512), 16 of 32
// (AVX2), 16 of 16 (SSE2). The lane-wise products below hold lane_rows x lane_cols accumulators,
// lane_cols vectors of B and one of A: 4 x 3 fills 16 registers, 4 rows being the batch of the
// sineSPE backward, whose whole B is then read once per call (4 x 6 with 32 registers).
template <int Rows, int Vecs, int Bytes, int LaneRows, int LaneCols>
struct GemmTile {
  static constexpr int rows = Rows, vecs = Vecs, bytes = Bytes, lane_rows = LaneRows, lane_cols = LaneCols;
};
using Avx512Tile = GemmTile<6, 4, 64, 4, 6>;
using Avx2Tile = GemmTile<6, 2, 32, 4, 3>;
using BaselineTile = GemmTile<6, 2, 16, 4, 3>;

// Rows rows of C, columns [0, Vecs W) from c; a(i, p) = a[i * a_row + p * a_col]. Each row of C
// starts from itself when `accumulate`, else from row_init when given, else from zero.
template <int Rows, int Vecs, int Bytes, typename T>
SPE_INLINE void gemm_block(int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                           bool accumulate, const T* row_init, T* c, int64_t ldc) {
  constexpr int64_t W = kLanes<T, Bytes>;
  Vec<T, Bytes> sums[Rows][Vecs];
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vecs; ++v)
      sums[i][v] = accumulate ? load<Bytes>(c + i * ldc + v * W)
                   : row_init ? load<Bytes>(row_init + v * W)
                              : Vec<T, Bytes>{};
  for (int64_t p = 0; p < k; ++p) {
    Vec<T, Bytes> row[Vecs];
    for (int v = 0; v < Vecs; ++v) row[v] = load<Bytes>(b + p * ldb + v * W);
    for (int i = 0; i < Rows; ++i) {
      const T x = a[i * a_row + p * a_col];
      for (int v = 0; v < Vecs; ++v) sums[i][v] += x * row[v];
    }
  }
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vecs; ++v) store(c + i * ldc + v * W, sums[i][v]);
}

// The last `left` (< Rows) rows of C in one block: a block of `left` rows, chosen at compile time.
template <int Rows, int Vecs, int Bytes, typename T>
SPE_INLINE void gemm_last_rows(int64_t left, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b,
                               int64_t ldb, bool accumulate, const T* row_init, T* c, int64_t ldc) {
  if constexpr (Rows > 1) {
    if (left == Rows - 1)
      return gemm_block<Rows - 1, Vecs, Bytes>(k, a, a_row, a_col, b, ldb, accumulate, row_init, c, ldc);
    gemm_last_rows<Rows - 1, Vecs, Bytes>(left, k, a, a_row, a_col, b, ldb, accumulate, row_init, c, ldc);
  }
}

// All m rows of C for the columns [0, Vecs W): blocks of Rows rows, then one of the rows left.
template <int Rows, int Vecs, int Bytes, typename T>
SPE_INLINE void gemm_columns(int64_t m, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                             bool accumulate, const T* row_init, T* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + Rows <= m; i += Rows)
    gemm_block<Rows, Vecs, Bytes>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, row_init, c + i * ldc, ldc);
  if (i < m)
    gemm_last_rows<Rows, Vecs, Bytes>(m - i, k, a + i * a_row, a_row, a_col, b, ldb, accumulate, row_init,
                                      c + i * ldc, ldc);
}

// The lane indices of one round of transpose_block: for each lane of the pair's first (low) and
// second (high) result, an index into the pair (the first row's lanes, then the second's).
template <typename Index, int W, int B>
struct TransposeMasks {
  static constexpr std::array<Index, W> make(bool high) {
    std::array<Index, W> m{};
    for (int l = 0; l < W; ++l) {
      const bool left = (l / B) % 2 == 0;
      m[l] = static_cast<Index>(high ? (left ? l + B : W + l) : (left ? l : W + l - B));
    }
    return m;
  }
  static constexpr std::array<Index, W> low = make(false), high = make(true);
};

// One round: the off-diagonal blocks of B x B in every 2B x 2B block of rows swap places.
template <int B, int Bytes, typename T>
SPE_INLINE void transpose_round(Vec<T, Bytes>* rows) {
  constexpr int W = static_cast<int>(kLanes<T, Bytes>);
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  using Mask = Vec<Index, Bytes>;
  Mask low, high;
  std::memcpy(&low, TransposeMasks<Index, W, B>::low.data(), sizeof low);
  std::memcpy(&high, TransposeMasks<Index, W, B>::high.data(), sizeof high);
  for (int i = 0; i < W; ++i)
    if ((i / B) % 2 == 0) {
      const Vec<T, Bytes> upper = rows[i], lower = rows[i + B];
      rows[i] = __builtin_shuffle(upper, lower, low);
      rows[i + B] = __builtin_shuffle(upper, lower, high);
    }
  if constexpr (B > 1) transpose_round<B / 2, Bytes, T>(rows);
}

// dst (W x W, row stride ld_dst) = src (W x W, row stride ld_src) transposed, W lanes, in
// registers: log2(W) rounds of two-vector shuffles (B = W/2, ..., 1).
template <int Bytes, typename T>
SPE_INLINE void transpose_block(const T* src, int64_t ld_src, T* dst, int64_t ld_dst) {
  constexpr int W = static_cast<int>(kLanes<T, Bytes>);
  Vec<T, Bytes> rows[W];
  for (int i = 0; i < W; ++i) rows[i] = load<Bytes>(src + i * ld_src);
  transpose_round<W / 2, Bytes, T>(rows);
  for (int i = 0; i < W; ++i) store(dst + i * ld_dst, rows[i]);
}

// out (k x n, row stride ld_out) = b (n x k, row stride ldb) transposed, by W x W blocks and
// scalar edges.
template <int Bytes, typename T>
SPE_INLINE void transpose(int64_t n, int64_t k, const T* b, int64_t ldb, T* out, int64_t ld_out) {
  constexpr int64_t W = kLanes<T, Bytes>;
  const int64_t n_blocks = n - n % W, k_blocks = k - k % W;
  for (int64_t j = 0; j < n_blocks; j += W)
    for (int64_t p = 0; p < k_blocks; p += W)
      transpose_block<Bytes>(b + j * ldb + p, ldb, out + p * ld_out + j, ld_out);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = j < n_blocks ? k_blocks : 0; p < k; ++p) out[p * ld_out + j] = b[j * ldb + p];
}

// Products lane by lane, over the W lanes of one vector: for each lane l, C_l (m x n) =
// A_l (m x k) B_l^T (B_l: n x k), where A_l(i, p) is lane l of the vector at a + i * lda + p * step,
// B_l(j, p) likewise from b, ldb, and C_l(i, j) is stored at c + i * ldc_row + j * ldc_col. The
// sineSPE backward keeps positions in lanes this way, where each position has its own matrices.
// A block holds Rows x Cols accumulators, Cols vectors of B and one of A in registers.
template <int Rows, int Cols, int Bytes, typename T>
SPE_INLINE void lanewise_block(int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t step, T* c,
                               int64_t ldc_row, int64_t ldc_col) {
  Vec<T, Bytes> sums[Rows][Cols] = {};
  for (int64_t p = 0; p < k; ++p) {
    Vec<T, Bytes> columns[Cols];
    for (int j = 0; j < Cols; ++j) columns[j] = load<Bytes>(b + j * ldb + p * step);
    for (int i = 0; i < Rows; ++i) {
      const Vec<T, Bytes> row = load<Bytes>(a + i * lda + p * step);
      for (int j = 0; j < Cols; ++j) sums[i][j] += row * columns[j];
    }
  }
  for (int i = 0; i < Rows; ++i)
    for (int j = 0; j < Cols; ++j) store(c + i * ldc_row + j * ldc_col, sums[i][j]);
}

// Rows rows of C, all n columns: blocks of Cols columns, then one block of the columns left.
template <int Rows, int Cols, int Bytes, typename T>
SPE_INLINE void lanewise_rows(int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, int64_t step,
                              T* c, int64_t ldc_row, int64_t ldc_col) {
  int64_t j = 0;
  for (; j + Cols <= n; j += Cols)
    lanewise_block<Rows, Cols, Bytes>(k, a, lda, b + j * ldb, ldb, step, c + j * ldc_col, ldc_row, ldc_col);
  if constexpr (Cols > 1)
    if (j < n)
      lanewise_rows<Rows, Cols - 1, Bytes>(n - j, k, a, lda, b + j * ldb, ldb, step, c + j * ldc_col, ldc_row,
                                           ldc_col);
}

// The whole lane-wise product: blocks of Tile::lane_rows rows and Tile::lane_cols columns, the
// rows left one at a time.
template <class Tile, typename T>
SPE_INLINE void lanewise_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
                              int64_t step, T* c, int64_t ldc_row, int64_t ldc_col) {
  constexpr int Rows = Tile::lane_rows, Cols = Tile::lane_cols, Bytes = Tile::bytes;
  int64_t i = 0;
  for (; i + Rows <= m; i += Rows)
    lanewise_rows<Rows, Cols, Bytes>(n, k, a + i * lda, lda, b, ldb, step, c + i * ldc_row, ldc_row, ldc_col);
  for (; i < m; ++i)
    lanewise_rows<1, Cols, Bytes>(n, k, a + i * lda, lda, b, ldb, step, c + i * ldc_row, ldc_row, ldc_col);
}

// scratch: room for op(B) when trans_b (k x n values; resized as needed). row_init (n values),
// when given and not `accumulate`: C = row_init + op(A) op(B), row_init added to every row.
template <class Tile, typename T>
SPE_INLINE void small_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                           const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc, std::vector<T>& scratch,
                           const T* row_init = nullptr) {
  constexpr int Bytes = Tile::bytes;
  if (trans_b) {  // rows of op(B) must be contiguous: transpose B (n x k) into scratch (k x n)
    scratch.resize(static_cast<size_t>(k * n));
    transpose<Bytes>(n, k, b, ldb, scratch.data(), n);
    b = scratch.data(), ldb = n;
  }
  const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
  constexpr int64_t W = kLanes<T, Bytes>;
  int64_t l = 0;
  for (; l + Tile::vecs * W <= n; l += Tile::vecs * W)
    gemm_columns<Tile::rows, Tile::vecs, Bytes>(m, k, a, a_row, a_col, b + l, ldb, accumulate,
                                                row_init ? row_init + l : nullptr, c + l, ldc);
  if constexpr (Tile::vecs > 2)  // two vectors of columns: twice the accumulators of one
    for (; l + 2 * W <= n; l += 2 * W)
      gemm_columns<Tile::rows, 2, Bytes>(m, k, a, a_row, a_col, b + l, ldb, accumulate,
                                         row_init ? row_init + l : nullptr, c + l, ldc);
  for (; l + W <= n; l += W)
    gemm_columns<Tile::rows, 1, Bytes>(m, k, a, a_row, a_col, b + l, ldb, accumulate,
                                       row_init ? row_init + l : nullptr, c + l, ldc);
  for (; l < n; ++l)  // the last columns, fewer than a vector
    for (int64_t i = 0; i < m; ++i) {
      T sum = accumulate ? c[i * ldc + l] : row_init ? row_init[l] : T(0);
      for (int64_t p = 0; p < k; ++p) sum += a[i * a_row + p * a_col] * b[p * ldb + l];
      c[i * ldc + l] = sum;
    }
}

}  // namespace spe::kernels::cpu
