#pragma once
// Small vector primitives for the CPU kernels, written with GCC/Clang vector extensions so
// that their accumulators live in registers. Each kernel compiles them once per instruction
// set (see sine_spe_filter.cpp); 64-byte vectors map onto one AVX-512, two AVX2 or four SSE
// registers.
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#define SPE_INLINE inline __attribute__((always_inline))

namespace spe::kernels::cpu {

typedef float VecFloat __attribute__((vector_size(64)));
typedef double VecDouble __attribute__((vector_size(64)));
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = VecFloat;
};
template <>
struct VecOf<double> {
  using type = VecDouble;
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

template <typename T>
SPE_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
SPE_INLINE void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof v);
}

// 8 values from p as float64.
SPE_INLINE VecDouble load_as_double(const double* p) { return load(p); }
SPE_INLINE VecDouble load_as_double(const float* p) {
  typedef float Float8 __attribute__((vector_size(32)));
  Float8 v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, VecDouble);
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

// The register blocking for an instruction set: accumulators, one row of op(B) and a broadcast
// must fit its vector registers (32 of 64 bytes; 16 of 32 bytes, two per Vec; 16 of 16 bytes).
template <int Rows, int Vecs>
struct GemmTile {
  static constexpr int rows = Rows, vecs = Vecs;
};
using Avx512Tile = GemmTile<6, 4>;
using Avx2Tile = GemmTile<6, 1>;
using BaselineTile = GemmTile<2, 1>;

// Rows rows of C, columns [0, Vecs W) from c; a(i, p) = a[i * a_row + p * a_col]. Each row of C
// starts from itself when `accumulate`, else from row_init when given, else from zero.
template <int Rows, int Vecs, typename T>
SPE_INLINE void gemm_block(int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                           bool accumulate, const T* row_init, T* c, int64_t ldc) {
  constexpr int64_t W = kLanes<T>;
  Vec<T> sums[Rows][Vecs];
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vecs; ++v)
      sums[i][v] = accumulate ? load(c + i * ldc + v * W) : row_init ? load(row_init + v * W) : Vec<T>{};
  for (int64_t p = 0; p < k; ++p) {
    Vec<T> row[Vecs];
    for (int v = 0; v < Vecs; ++v) row[v] = load(b + p * ldb + v * W);
    for (int i = 0; i < Rows; ++i) {
      const T x = a[i * a_row + p * a_col];
      for (int v = 0; v < Vecs; ++v) sums[i][v] += x * row[v];
    }
  }
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vecs; ++v) store(c + i * ldc + v * W, sums[i][v]);
}

// The last `left` (< Rows) rows of C in one block: a block of `left` rows, chosen at compile time.
template <int Rows, int Vecs, typename T>
SPE_INLINE void gemm_last_rows(int64_t left, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b,
                               int64_t ldb, bool accumulate, const T* row_init, T* c, int64_t ldc) {
  if constexpr (Rows > 1) {
    if (left == Rows - 1)
      return gemm_block<Rows - 1, Vecs>(k, a, a_row, a_col, b, ldb, accumulate, row_init, c, ldc);
    gemm_last_rows<Rows - 1, Vecs>(left, k, a, a_row, a_col, b, ldb, accumulate, row_init, c, ldc);
  }
}

// All m rows of C for the columns [0, Vecs W): blocks of Rows rows, then one of the rows left.
template <int Rows, int Vecs, typename T>
SPE_INLINE void gemm_columns(int64_t m, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                             bool accumulate, const T* row_init, T* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + Rows <= m; i += Rows)
    gemm_block<Rows, Vecs>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, row_init, c + i * ldc, ldc);
  if (i < m)
    gemm_last_rows<Rows, Vecs>(m - i, k, a + i * a_row, a_row, a_col, b, ldb, accumulate, row_init, c + i * ldc, ldc);
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
template <int B, int W, typename T>
SPE_INLINE void transpose_round(Vec<T>* rows) {
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef Index Mask __attribute__((vector_size(64)));
  Mask low, high;
  std::memcpy(&low, TransposeMasks<Index, W, B>::low.data(), sizeof low);
  std::memcpy(&high, TransposeMasks<Index, W, B>::high.data(), sizeof high);
  for (int i = 0; i < W; ++i)
    if ((i / B) % 2 == 0) {
      const Vec<T> upper = rows[i], lower = rows[i + B];
      rows[i] = __builtin_shuffle(upper, lower, low);
      rows[i + B] = __builtin_shuffle(upper, lower, high);
    }
  if constexpr (B > 1) transpose_round<B / 2, W, T>(rows);
}

// dst (W x W, row stride ld_dst) = src (W x W, row stride ld_src) transposed, W = kLanes<T>, in
// registers: log2(W) rounds of two-vector shuffles (B = W/2, ..., 1).
template <typename T>
SPE_INLINE void transpose_block(const T* src, int64_t ld_src, T* dst, int64_t ld_dst) {
  constexpr int W = static_cast<int>(kLanes<T>);
  Vec<T> rows[W];
  for (int i = 0; i < W; ++i) rows[i] = load(src + i * ld_src);
  transpose_round<W / 2, W, T>(rows);
  for (int i = 0; i < W; ++i) store(dst + i * ld_dst, rows[i]);
}

// out (k x n) = b (n x k, row stride ldb) transposed, by W x W blocks and scalar edges.
template <typename T>
SPE_INLINE void transpose(int64_t n, int64_t k, const T* b, int64_t ldb, T* out) {
  constexpr int64_t W = kLanes<T>;
  const int64_t n_blocks = n - n % W, k_blocks = k - k % W;
  for (int64_t j = 0; j < n_blocks; j += W)
    for (int64_t p = 0; p < k_blocks; p += W) transpose_block(b + j * ldb + p, ldb, out + p * n + j, n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = j < n_blocks ? k_blocks : 0; p < k; ++p) out[p * n + j] = b[j * ldb + p];
}

// scratch: room for op(B) when trans_b (k x n values; resized as needed). row_init (n values),
// when given and not `accumulate`: C = row_init + op(A) op(B), row_init added to every row.
template <class Tile, typename T>
SPE_INLINE void small_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                           const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc, std::vector<T>& scratch,
                           const T* row_init = nullptr) {
  if (trans_b) {  // rows of op(B) must be contiguous: transpose B (n x k) into scratch (k x n)
    scratch.resize(static_cast<size_t>(k * n));
    transpose(n, k, b, ldb, scratch.data());
    b = scratch.data(), ldb = n;
  }
  const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
  constexpr int64_t W = kLanes<T>;
  int64_t l = 0;
  for (; l + Tile::vecs * W <= n; l += Tile::vecs * W)
    gemm_columns<Tile::rows, Tile::vecs>(m, k, a, a_row, a_col, b + l, ldb, accumulate, row_init ? row_init + l : nullptr,
                                         c + l, ldc);
  for (; l + W <= n; l += W)
    gemm_columns<Tile::rows, 1>(m, k, a, a_row, a_col, b + l, ldb, accumulate, row_init ? row_init + l : nullptr,
                                         c + l, ldc);
  for (; l < n; ++l)  // the last columns, fewer than a vector
    for (int64_t i = 0; i < m; ++i) {
      T sum = accumulate ? c[i * ldc + l] : row_init ? row_init[l] : T(0);
      for (int64_t p = 0; p < k; ++p) sum += a[i * a_row + p * a_col] * b[p * ldb + l];
      c[i * ldc + l] = sum;
    }
}

}  // namespace spe::kernels::cpu
