#include "kernels/cpu/depthwise_correlation.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

// Output positions per chunk: a chunk's positions of x (P + S2 - 1 of R values) are packed together,
// so that a block's products read them from consecutive memory instead of H D R values apart.
constexpr int64_t kChunk = 256;

template <typename T>
struct Args {
  const CorrelationShape& s;
  const T *x, *w, *grad_out;
  T *out, *grad_w;
};

// The block of positions of one product: Tile::rows.
template <class Tile>
constexpr int64_t kBlock = Tile::rows;

// The rows of one channel: position (t1, t2) of x, out or grad_out at base + (t1 X + t2) C R + c R,
// X the row's extent in that tensor.
template <typename T>
SPE_INLINE T* at_position(T* base, const CorrelationShape& s, int64_t row_extent, int64_t c, int64_t t1, int64_t t2) {
  return base + ((t1 * row_extent + t2) * s.channels + c) * s.realizations;
}

// Output row t1 of channel c, chunk by chunk of positions, filter row by filter row: block by block,
// out_block (m x R) += band_a (m x (S2 + m - 1)) x packed positions [i0, i0 + S2 + m - 1) of input
// row t1 + a, band_a[i, i + j] = w[c, a, j] (bands: S1 of them, each block x (S2 + block - 1)).
template <class Tile, typename T>
SPE_INLINE void forward_row(const Args<T>& a, int64_t c, int64_t t1, const std::vector<T>& bands,
                            std::vector<T>& packed, std::vector<T>& scratch) {
  const CorrelationShape& s = a.s;
  const int64_t S = s.taps, R = s.realizations, ld = s.channels * R, band_ld = S + kBlock<Tile> - 1;
  for (int64_t t0 = 0; t0 < s.outputs(); t0 += kChunk) {
    const int64_t p = std::min(kChunk, s.outputs() - t0), rows = p + S - 1;
    T* out = at_position(a.out, s, s.outputs(), c, t1, t0);
    for (int64_t row = 0; row < s.row_taps; ++row) {
      const T* x = at_position(a.x, s, s.extent, c, t1 + row, t0);
      packed.resize(static_cast<size_t>(rows * R));
      for (int64_t u = 0; u < rows; ++u) std::copy_n(x + u * ld, R, packed.data() + u * R);
      for (int64_t i0 = 0; i0 < p; i0 += kBlock<Tile>) {
        const int64_t m = std::min(kBlock<Tile>, p - i0);
        small_gemm<Tile>(false, false, m, R, S + m - 1, bands.data() + row * kBlock<Tile> * band_ld, band_ld,
                         packed.data() + i0 * R, R, /*accumulate=*/row > 0, out + i0 * ld, ld, scratch);
      }
    }
  }
}

template <class Tile, typename T>
SPE_INLINE void forward_channel(const Args<T>& a, int64_t c, std::vector<T>& bands, std::vector<T>& packed,
                                std::vector<T>& scratch) {
  const CorrelationShape& s = a.s;
  const int64_t S = s.taps, band_ld = S + kBlock<Tile> - 1, band_size = kBlock<Tile> * band_ld;
  bands.assign(static_cast<size_t>(s.row_taps * band_size), T(0));
  for (int64_t row = 0; row < s.row_taps; ++row) {
    const T* w = a.w + (c * s.row_taps + row) * S;
    for (int64_t i = 0; i < kBlock<Tile>; ++i) std::copy(w, w + S, bands.data() + row * band_size + i * band_ld + i);
  }
  for (int64_t t1 = 0; t1 < s.output_rows(); ++t1) forward_row<Tile>(a, c, t1, bands, packed, scratch);
}

// grad_w[c, a, j] = sum_i acc_a[i, i + j], where acc_a (block x width) sums, over every output row
// t1 and block of positions from t, grad_out rows (t1, [t, t + m)) (m x R) times x^T (R x width)
// of input row t1 + a from position t: entry (i, col) of a block pairs grad_out[t1, t + i] with
// x[t1 + a, t + col], i.e. the tap col - i. The packed x^T is padded with zeros to whole vectors
// of columns.
template <class Tile, typename T>
SPE_INLINE void weight_grad_channel(const Args<T>& a, int64_t c, std::vector<T>& acc, std::vector<T>& packed,
                                    std::vector<T>& scratch) {
  const CorrelationShape& s = a.s;
  constexpr int64_t W = kLanes<T, Tile::bytes>;
  const int64_t S = s.taps, R = s.realizations, ld = s.channels * R;
  const int64_t width = (S + kBlock<Tile> - 1 + W - 1) / W * W, packed_ld = kChunk + width;
  const int64_t acc_size = kBlock<Tile> * width;
  acc.assign(static_cast<size_t>(s.row_taps * acc_size), T(0));
  packed.resize(static_cast<size_t>(R * packed_ld));
  for (int64_t t1 = 0; t1 < s.output_rows(); ++t1)
    for (int64_t t0 = 0; t0 < s.outputs(); t0 += kChunk) {
      const int64_t p = std::min(kChunk, s.outputs() - t0), rows = p + S - 1;
      const T* g = at_position(a.grad_out, s, s.outputs(), c, t1, t0);
      for (int64_t row = 0; row < s.row_taps; ++row) {
        transpose<Tile::bytes>(rows, R, at_position(a.x, s, s.extent, c, t1 + row, t0), ld, packed.data(), packed_ld);
        for (int64_t r = 0; r < R; ++r)
          std::fill(packed.data() + r * packed_ld + rows, packed.data() + (r + 1) * packed_ld, T(0));
        for (int64_t i0 = 0; i0 < p; i0 += kBlock<Tile>) {
          const int64_t m = std::min(kBlock<Tile>, p - i0);
          small_gemm<Tile>(false, false, m, width, R, g + i0 * ld, ld, packed.data() + i0, packed_ld, true,
                           acc.data() + row * acc_size, width, scratch);
        }
      }
    }
  for (int64_t row = 0; row < s.row_taps; ++row)
    for (int64_t j = 0; j < S; ++j) {
      T sum = 0;
      for (int64_t i = 0; i < kBlock<Tile>; ++i) sum += acc[row * acc_size + i * width + i + j];
      a.grad_w[(c * s.row_taps + row) * S + j] = sum;
    }
}

struct ForwardChannels {
  template <class Tile, typename T>
  static SPE_INLINE void run(const Args<T>& a, int64_t begin, int64_t end) {
    std::vector<T> bands, packed, scratch;
    for (int64_t c = begin; c < end; ++c) forward_channel<Tile>(a, c, bands, packed, scratch);
  }
};
struct WeightGradChannels {
  template <class Tile, typename T>
  static SPE_INLINE void run(const Args<T>& a, int64_t begin, int64_t end) {
    std::vector<T> acc, packed, scratch;
    for (int64_t c = begin; c < end; ++c) weight_grad_channel<Tile>(a, c, acc, packed, scratch);
  }
};

template <class Kernel, typename T>
void run_channels(const Args<T>& args) {
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, args.s.channels, 1,
                   [&](int64_t begin, int64_t end) { run_for_isa<Kernel>(isa, args, begin, end); });
}

}  // namespace

template <typename T>
void depthwise_correlation_forward(const CorrelationShape& s, const T* x, const T* w, T* out) {
  run_channels<ForwardChannels>(Args<T>{s, x, w, nullptr, out, nullptr});
}

template <typename T>
void depthwise_correlation_weight_grad(const CorrelationShape& s, const T* x, const T* grad_out, T* grad_w) {
  run_channels<WeightGradChannels>(Args<T>{s, x, nullptr, grad_out, nullptr, grad_w});
}

#define SPE_INSTANTIATE(T)                                                                      \
  template void depthwise_correlation_forward<T>(const CorrelationShape&, const T*, const T*, T*); \
  template void depthwise_correlation_weight_grad<T>(const CorrelationShape&, const T*, const T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
