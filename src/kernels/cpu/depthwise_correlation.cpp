#include "kernels/cpu/depthwise_correlation.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

// Output positions per chunk: a chunk's rows of x (P + S - 1 of R values) are packed together, so
// that a block's products read them from consecutive memory instead of H D R values apart.
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

// out[t0 + i, c, :] for the chunk's p positions from t0: block by block, out_block (m x R) =
// band (m x (S + m - 1)) x packed rows [i0, i0 + S + m - 1) of x, band[i, i + j] = w[c, j].
template <class Tile, typename T>
SPE_INLINE void forward_channel(const Args<T>& a, int64_t c, std::vector<T>& band, std::vector<T>& packed,
                                std::vector<T>& scratch) {
  const CorrelationShape& s = a.s;
  const int64_t S = s.taps, R = s.realizations, ld = s.channels * R, band_ld = S + kBlock<Tile> - 1;
  band.assign(static_cast<size_t>(kBlock<Tile> * band_ld), T(0));
  for (int64_t i = 0; i < kBlock<Tile>; ++i) std::copy(a.w + c * S, a.w + (c + 1) * S, band.data() + i * band_ld + i);
  for (int64_t t0 = 0; t0 < s.outputs(); t0 += kChunk) {
    const int64_t p = std::min(kChunk, s.outputs() - t0), rows = p + S - 1;
    packed.resize(static_cast<size_t>(rows * R));
    for (int64_t u = 0; u < rows; ++u) std::copy_n(a.x + (t0 + u) * ld + c * R, R, packed.data() + u * R);
    for (int64_t i0 = 0; i0 < p; i0 += kBlock<Tile>) {
      const int64_t m = std::min(kBlock<Tile>, p - i0);
      small_gemm<Tile>(false, false, m, R, S + m - 1, band.data(), band_ld, packed.data() + i0 * R, R, false,
                       a.out + (t0 + i0) * ld + c * R, ld, scratch);
    }
  }
}

// grad_w[c, j] = sum_i acc[i, i + j], where acc (rows x width) sums, over every block of positions
// from t, grad_out rows [t, t + m) (m x R) times x^T (R x width) from position t: entry (i, col)
// of a block pairs grad_out[t + i] with x[t + col], i.e. the tap col - i. The packed x^T is
// padded with zeros to whole vectors of columns.
template <class Tile, typename T>
SPE_INLINE void weight_grad_channel(const Args<T>& a, int64_t c, std::vector<T>& acc, std::vector<T>& packed,
                                    std::vector<T>& scratch) {
  const CorrelationShape& s = a.s;
  constexpr int64_t W = kLanes<T, Tile::bytes>;
  const int64_t S = s.taps, R = s.realizations, ld = s.channels * R;
  const int64_t width = (S + kBlock<Tile> - 1 + W - 1) / W * W, packed_ld = kChunk + width;
  acc.assign(static_cast<size_t>(kBlock<Tile> * width), T(0));
  packed.resize(static_cast<size_t>(R * packed_ld));
  for (int64_t t0 = 0; t0 < s.outputs(); t0 += kChunk) {
    const int64_t p = std::min(kChunk, s.outputs() - t0), rows = p + S - 1;
    transpose<Tile::bytes>(rows, R, a.x + t0 * ld + c * R, ld, packed.data(), packed_ld);
    for (int64_t r = 0; r < R; ++r) std::fill(packed.data() + r * packed_ld + rows, packed.data() + (r + 1) * packed_ld, T(0));
    for (int64_t i0 = 0; i0 < p; i0 += kBlock<Tile>) {
      const int64_t m = std::min(kBlock<Tile>, p - i0);
      small_gemm<Tile>(false, false, m, width, R, a.grad_out + (t0 + i0) * ld + c * R, ld, packed.data() + i0,
                       packed_ld, true, acc.data(), width, scratch);
    }
  }
  for (int64_t j = 0; j < S; ++j) {
    T sum = 0;
    for (int64_t i = 0; i < kBlock<Tile>; ++i) sum += acc[i * width + i + j];
    a.grad_w[c * S + j] = sum;
  }
}

struct ForwardChannels {
  template <class Tile, typename T>
  static SPE_INLINE void run(const Args<T>& a, int64_t begin, int64_t end) {
    std::vector<T> band, packed, scratch;
    for (int64_t c = begin; c < end; ++c) forward_channel<Tile>(a, c, band, packed, scratch);
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
