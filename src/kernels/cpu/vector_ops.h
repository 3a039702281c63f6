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

// The sum of a vector's lanes by halving: log2(lanes) shuffles and adds, not a chain of lanes.
SPE_INLINE float horizontal_sum(VecFloat v) {
  typedef int Mask __attribute__((vector_size(64)));
  v += __builtin_shuffle(v, Mask{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  v += __builtin_shuffle(v, Mask{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
  v += __builtin_shuffle(v, Mask{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
  v += __builtin_shuffle(v, Mask{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
  return v[0];
}
SPE_INLINE double horizontal_sum(VecDouble v) {
  typedef long long Mask __attribute__((vector_size(64)));
  v += __builtin_shuffle(v, Mask{4, 5, 6, 7, 0, 1, 2, 3});
  v += __builtin_shuffle(v, Mask{2, 3, 0, 1, 6, 7, 4, 5});
  v += __builtin_shuffle(v, Mask{1, 0, 3, 2, 5, 4, 7, 6});
  return v[0];
}

// The lane sums of four vectors at once: two rounds of pairwise folding put the four vectors'
// partial sums side by side in one vector, so the tail of the reduction is shared.
SPE_INLINE void horizontal_sums4(VecFloat v0, VecFloat v1, VecFloat v2, VecFloat v3, float* out) {
  typedef int Mask __attribute__((vector_size(64)));
  const Mask low{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
  const Mask high{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
  const VecFloat t01 = __builtin_shuffle(v0, v1, low) + __builtin_shuffle(v0, v1, high);  // v0 | v1, 8 each
  const VecFloat t23 = __builtin_shuffle(v2, v3, low) + __builtin_shuffle(v2, v3, high);  // v2 | v3
  const Mask first{0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
  const Mask second{4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
  VecFloat u = __builtin_shuffle(t01, t23, first) + __builtin_shuffle(t01, t23, second);  // 4 each
  u += __builtin_shuffle(u, Mask{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
  u += __builtin_shuffle(u, Mask{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
  out[0] = u[0], out[1] = u[4], out[2] = u[8], out[3] = u[12];
}
SPE_INLINE void horizontal_sums4(VecDouble v0, VecDouble v1, VecDouble v2, VecDouble v3, double* out) {
  typedef long long Mask __attribute__((vector_size(64)));
  const Mask low{0, 1, 2, 3, 8, 9, 10, 11}, high{4, 5, 6, 7, 12, 13, 14, 15};
  const VecDouble t01 = __builtin_shuffle(v0, v1, low) + __builtin_shuffle(v0, v1, high);  // v0 | v1, 4 each
  const VecDouble t23 = __builtin_shuffle(v2, v3, low) + __builtin_shuffle(v2, v3, high);
  const Mask first{0, 1, 4, 5, 8, 9, 12, 13}, second{2, 3, 6, 7, 10, 11, 14, 15};
  VecDouble u = __builtin_shuffle(t01, t23, first) + __builtin_shuffle(t01, t23, second);  // 2 each
  u += __builtin_shuffle(u, Mask{1, 0, 3, 2, 5, 4, 7, 6});
  out[0] = u[0], out[1] = u[2], out[2] = u[4], out[3] = u[6];
}

// out[l] = (init ? init[l] : 0) + sum_i coeffs[i] rows[i * stride + l] for l < len.
// The partial sums of 4 vectors stay in registers across all `count` rows.
template <typename T>
SPE_INLINE void combine_rows(int64_t count, const T* coeffs, const T* rows, int64_t stride, const T* init, T* out,
                             int64_t len) {
  constexpr int64_t W = kLanes<T>;
  int64_t l = 0;
  for (; l + 4 * W <= len; l += 4 * W) {
    Vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
    if (init) {
      a0 = load(init + l), a1 = load(init + l + W), a2 = load(init + l + 2 * W), a3 = load(init + l + 3 * W);
    }
    for (int64_t i = 0; i < count; ++i) {
      const T c = coeffs[i];
      const T* r = rows + i * stride + l;
      a0 += c * load(r);
      a1 += c * load(r + W);
      a2 += c * load(r + 2 * W);
      a3 += c * load(r + 3 * W);
    }
    store(out + l, a0), store(out + l + W, a1), store(out + l + 2 * W, a2), store(out + l + 3 * W, a3);
  }
  for (; l + W <= len; l += W) {
    Vec<T> a = {};
    if (init) a = load(init + l);
    for (int64_t i = 0; i < count; ++i) a += coeffs[i] * load(rows + i * stride + l);
    store(out + l, a);
  }
  for (; l < len; ++l) {
    T a = init ? init[l] : T(0);
    for (int64_t i = 0; i < count; ++i) a += coeffs[i] * rows[i * stride + l];
    out[l] = a;
  }
}

// P combinations of the same rows at once, each with its own coefficients (coeffs[p * count + i]),
// its own start (init + p * init_stride; init_stride 0 shares one) and its own output
// (out + p * out_stride): every row is loaded once for all P outputs.
//   out_p[l] = init_p[l] + sum_i coeffs[p * count + i] rows[i * stride + l]
template <int P, typename T>
SPE_INLINE void combine_rows_shared(int64_t count, const T* coeffs, const T* rows, int64_t stride, const T* init,
                                    int64_t init_stride, T* out, int64_t out_stride, int64_t len) {
  constexpr int64_t W = kLanes<T>;
  int64_t l = 0;
  for (; l + 2 * W <= len; l += 2 * W) {
    Vec<T> a0[P], a1[P];
    for (int p = 0; p < P; ++p) {
      a0[p] = load(init + p * init_stride + l);
      a1[p] = load(init + p * init_stride + l + W);
    }
    for (int64_t i = 0; i < count; ++i) {
      const Vec<T> r0 = load(rows + i * stride + l), r1 = load(rows + i * stride + l + W);
      for (int p = 0; p < P; ++p) {
        const T c = coeffs[p * count + i];
        a0[p] += c * r0;
        a1[p] += c * r1;
      }
    }
    for (int p = 0; p < P; ++p) {
      store(out + p * out_stride + l, a0[p]);
      store(out + p * out_stride + l + W, a1[p]);
    }
  }
  for (int p = 0; p < P; ++p)
    if (l < len)
      combine_rows(count, coeffs + p * count, rows + l, stride, init + p * init_stride + l, out + p * out_stride + l,
                   len - l);
}

constexpr int kShared = 4;  // outputs computed together by the *_many primitives

// `outputs` combinations as above, kShared at a time.
template <typename T>
SPE_INLINE void combine_rows_many(int64_t outputs, int64_t count, const T* coeffs, const T* rows, int64_t stride,
                                  const T* init, int64_t init_stride, T* out, int64_t out_stride, int64_t len) {
  int64_t p = 0;
  for (; p + kShared <= outputs; p += kShared)
    combine_rows_shared<kShared>(count, coeffs + p * count, rows, stride, init + p * init_stride, init_stride,
                                 out + p * out_stride, out_stride, len);
  for (; p < outputs; ++p)
    combine_rows(count, coeffs + p * count, rows, stride, init + p * init_stride, out + p * out_stride, len);
}

// out[p] = shared . rows[p * stride], for p < P: `shared` is loaded once for all P dot products.
template <int P, typename T>
SPE_INLINE void dot_shared(const T* shared, const T* rows, int64_t stride, int64_t len, T* out) {
  constexpr int64_t W = kLanes<T>;
  Vec<T> acc[P];
  for (int p = 0; p < P; ++p) acc[p] = Vec<T>{};
  int64_t l = 0;
  for (; l + W <= len; l += W) {
    const Vec<T> v = load(shared + l);
    for (int p = 0; p < P; ++p) acc[p] += v * load(rows + p * stride + l);
  }
  if constexpr (P == 4) {
    horizontal_sums4(acc[0], acc[1], acc[2], acc[3], out);
  } else {
    for (int p = 0; p < P; ++p) out[p] = horizontal_sum(acc[p]);
  }
  for (int p = 0; p < P; ++p)
    for (int64_t m = l; m < len; ++m) out[p] += shared[m] * rows[p * stride + m];
}

// `outputs` dot products with one shared vector, kShared at a time.
template <typename T>
SPE_INLINE void dot_many(int64_t outputs, const T* shared, const T* rows, int64_t stride, int64_t len, T* out) {
  int64_t p = 0;
  for (; p + kShared <= outputs; p += kShared) dot_shared<kShared>(shared, rows + p * stride, stride, len, out + p);
  for (; p < outputs; ++p) dot_shared<1>(shared, rows + p * stride, stride, len, out + p);
}

// sum_l a[l] b[l] with four vector partial sums.
template <typename T>
SPE_INLINE T dot(const T* a, const T* b, int64_t len) {
  constexpr int64_t W = kLanes<T>;
  Vec<T> s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t l = 0;
  for (; l + 4 * W <= len; l += 4 * W) {
    s0 += load(a + l) * load(b + l);
    s1 += load(a + l + W) * load(b + l + W);
    s2 += load(a + l + 2 * W) * load(b + l + 2 * W);
    s3 += load(a + l + 3 * W) * load(b + l + 3 * W);
  }
  for (; l + W <= len; l += W) s0 += load(a + l) * load(b + l);
  T total = horizontal_sum((s0 + s1) + (s2 + s3));
  for (; l < len; ++l) total += a[l] * b[l];
  return total;
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

// Rows rows of C, columns [0, Vecs W) from c; a(i, p) = a[i * a_row + p * a_col].
template <int Rows, int Vecs, typename T>
SPE_INLINE void gemm_block(int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                           bool accumulate, T* c, int64_t ldc) {
  constexpr int64_t W = kLanes<T>;
  Vec<T> sums[Rows][Vecs];
  for (int i = 0; i < Rows; ++i)
    for (int v = 0; v < Vecs; ++v) sums[i][v] = accumulate ? load(c + i * ldc + v * W) : Vec<T>{};
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

// All m rows of C for the columns [0, Vecs W): blocks of Rows rows, then of 4, 2 and 1.
template <int Rows, int Vecs, typename T>
SPE_INLINE void gemm_columns(int64_t m, int64_t k, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                             bool accumulate, T* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + Rows <= m; i += Rows)
    gemm_block<Rows, Vecs>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, c + i * ldc, ldc);
  if constexpr (Rows > 4) {
    if (i + 4 <= m) {
      gemm_block<4, Vecs>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, c + i * ldc, ldc);
      i += 4;
    }
  }
  if constexpr (Rows > 2) {
    if (i + 2 <= m) {
      gemm_block<2, Vecs>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, c + i * ldc, ldc);
      i += 2;
    }
  }
  for (; i < m; ++i) gemm_block<1, Vecs>(k, a + i * a_row, a_row, a_col, b, ldb, accumulate, c + i * ldc, ldc);
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

// scratch: room for op(B) when trans_b (k x n values; resized as needed).
template <class Tile, typename T>
SPE_INLINE void small_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                           const T* b, int64_t ldb, bool accumulate, T* c, int64_t ldc, std::vector<T>& scratch) {
  if (trans_b) {  // rows of op(B) must be contiguous: transpose B (n x k) into scratch (k x n)
    scratch.resize(static_cast<size_t>(k * n));
    transpose(n, k, b, ldb, scratch.data());
    b = scratch.data(), ldb = n;
  }
  const int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
  constexpr int64_t W = kLanes<T>;
  int64_t l = 0;
  for (; l + Tile::vecs * W <= n; l += Tile::vecs * W)
    gemm_columns<Tile::rows, Tile::vecs>(m, k, a, a_row, a_col, b + l, ldb, accumulate, c + l, ldc);
  for (; l + W <= n; l += W) gemm_columns<Tile::rows, 1>(m, k, a, a_row, a_col, b + l, ldb, accumulate, c + l, ldc);
  for (; l < n; ++l)  // the last columns, fewer than a vector
    for (int64_t i = 0; i < m; ++i) {
      T sum = accumulate ? c[i * ldc + l] : T(0);
      for (int64_t p = 0; p < k; ++p) sum += a[i * a_row + p * a_col] * b[p * ldb + l];
      c[i * ldc + l] = sum;
    }
}

}  // namespace spe::kernels::cpu
