// convSPE. White noise Z ~ N(0, 1) of extent L + 4S (per axis) for every (r, h, d) is
// cross-correlated with each filter without padding and cropped to [S, S + L):
//   Qbar = (Z * w_q) / (R D)^(1/4),   Kbar = (Z * w_k) / (R D)^(1/4)
// so E[sum_r Qbar(m) Kbar(n)] = sqrt(R / D) sum_j w_q[j] w_k[j + (m - n)] (per axis for images).
#include "spe/encoding/conv_spe.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "check.h"
#include "conv_code.h"
#include "ops/input_checks.h"
#include "spe/ops/depthwise_correlation.h"

namespace spe {
namespace {

// With the automatic algorithm, 1-D filters of at least this many taps go through FFTs: the
// crossover measured on this project's machine for a code and its gradient, since the direct
// correlation is the fused op (docs/BENCHMARKS.md, "convSPE codes"). In 2-D the direct correlation
// is always used.
constexpr int64_t kFftMinTaps1d = 2048;

// Depthwise cross-correlation of x (batch, H*D, extent...) with w (H, D, S...), no padding:
// out[t] = sum_j w[j] x[t + j], t in [0, extent - S].
at::Tensor direct_correlate(const at::Tensor& x, const at::Tensor& w) {
  const int64_t channels = w.size(0) * w.size(1);
  auto weight_shape = w.sizes().vec();
  weight_shape.erase(weight_shape.begin(), weight_shape.begin() + 2);
  weight_shape.insert(weight_shape.begin(), {channels, 1});
  at::Tensor weight = w.reshape(weight_shape);  // (H*D, 1, S...)
  const at::Tensor no_bias;
  if (w.dim() == 3) {
    return at::conv1d(x, weight, no_bias, at::IntArrayRef{1}, at::IntArrayRef{0},
                      at::IntArrayRef{1}, channels);
  }
  return at::conv2d(x, weight, no_bias, at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0},
                    at::IntArrayRef{1, 1}, channels);
}

// The same through FFTs over the extents: correlation is a product with the conjugate spectrum
// of the filter, and an FFT length equal to the extent never wraps the outputs that are kept.
at::Tensor fft_correlate(const at::Tensor& x, const at::Tensor& w) {
  const int64_t axes = w.dim() - 2;
  std::vector<int64_t> dims, extents;
  for (int64_t i = 0; i < axes; ++i) {
    dims.push_back(2 + i);
    extents.push_back(x.size(2 + i));
  }
  at::Tensor filter = w.flatten(0, 1).unsqueeze(0);  // (1, H*D, S...)
  at::Tensor spectrum = at::fft_rfftn(x, extents, dims) * at::conj(at::fft_rfftn(filter, extents, dims));
  at::Tensor out = at::fft_irfftn(spectrum, extents, dims);
  for (int64_t i = 0; i < axes; ++i) out = out.narrow(2 + i, 0, x.size(2 + i) - w.size(2 + i) + 1);
  return out;
}

bool uses_fft(const at::Tensor& w, ConvAlgorithm algorithm) {
  const bool large_1d = w.dim() == 3 && w.size(2) >= kFftMinTaps1d;
  return algorithm == ConvAlgorithm::fft || (algorithm == ConvAlgorithm::automatic && large_1d);
}

at::Tensor depthwise_correlate(const at::Tensor& x, const at::Tensor& w, ConvAlgorithm algorithm) {
  return uses_fft(w, algorithm) ? fft_correlate(x, w) : direct_correlate(x, w);
}

// Whether a code's direct correlation runs on the fused CPU op (ops/depthwise_correlation.h), which
// reads the noise rows as they are drawn and writes the code in its (N, H, D, R) order: on CPU in
// float32 or float64.
bool fused_correlation(const at::Tensor& w, ConvAlgorithm algorithm) {
  return !uses_fft(w, algorithm) && ops::fused_kernel_takes(w);
}

}  // namespace

ConvSPEImpl::ConvSPEImpl(const ConvSPEOptions& options_) : options(options_) {
  detail::check_positive("ConvSPE", "heads", options.heads());
  detail::check_positive("ConvSPE", "dim", options.dim());
  detail::check_positive("ConvSPE", "kernel_size (S)", options.kernel_size());
  detail::check_positive("ConvSPE", "realizations (R)", options.realizations());
  TORCH_CHECK(options.ndim() == 1 || options.ndim() == 2,
              "ConvSPE: ndim must be 1 (sequences) or 2 (images), got ", options.ndim());
  reset();
}

void ConvSPEImpl::reset() {
  std::vector<int64_t> shape{options.heads(), options.dim()};
  for (int64_t i = 0; i < options.ndim(); ++i) shape.push_back(options.kernel_size());
  // Reference initialisation: U[0, 1) / sqrt(prod(kernel) / 2).
  const double scale =
      std::sqrt(std::pow(static_cast<double>(options.kernel_size()), options.ndim()) / 2.0);
  at::NoGradGuard no_grad;
  weight_q = register_parameter("weight_q", at::rand(shape) / scale);
  weight_k = register_parameter("weight_k", at::rand(shape) / scale);
}

void ConvSPEImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::ConvSPE(heads=" << options.heads() << ", dim=" << options.dim()
         << ", ndim=" << options.ndim() << ", kernel_size=" << options.kernel_size()
         << ", realizations=" << options.realizations() << ")";
}

static void check_shape(const ConvSPEOptions& options, at::IntArrayRef shape) {
  TORCH_CHECK(static_cast<int64_t>(shape.size()) == options.ndim(), "ConvSPE: expected a shape of ",
              options.ndim(), " extent(s) for ndim=", options.ndim(), ", got ", shape);
  for (int64_t extent : shape) detail::check_positive("ConvSPE", "every extent of the shape", extent);
}

SPECode ConvSPEImpl::forward(at::IntArrayRef shape, c10::optional<int64_t> realizations,
                             OptionalGenerator generator) {
  return code_for_key(shape, draw_key(generator), realizations);
}

SPECode ConvSPEImpl::code_for_key(at::IntArrayRef shape, uint64_t key, c10::optional<int64_t> realizations) const {
  check_shape(options, shape);
  const int64_t r = realizations.value_or(options.realizations());
  detail::check_positive("ConvSPE", "realizations (R)", r);
  const int64_t s = options.kernel_size();
  const int64_t h = options.heads(), d = options.dim();

  // Noise rows indexed by position (row-major over the padded extents): (P, H*D*R).
  std::vector<int64_t> extents;
  int64_t rows = 1;
  for (int64_t extent : shape) {
    extents.push_back(extent + 4 * s);
    rows *= extents.back();
  }
  const double scale = detail::conv_code_scale(r, d);
  const int64_t first = detail::conv_first_noise_row(0, s);  // the noise row under position 0's first tap
  if (fused_correlation(weight_q, options.algorithm())) {
    // Only the noise under the filters of positions [0, L) along each axis, [S, L + 2S - 1) (the rows
    // are keyed by position, so drawing a range gives the same values): the padded grid's rows from
    // S (whole, for an image), then their columns from S. (L + S - 1, H*D, R) or
    // (L1 + S - 1, L2 + S - 1, H*D, R).
    const int64_t row_width = rows / extents[0];  // 1 for a sequence
    std::vector<int64_t> grid = extents;
    grid[0] = shape[0] + s - 1;
    grid.insert(grid.end(), {h * d, r});
    at::Tensor z = keyed_normal_rows(key, first * row_width, grid[0] * row_width, h * d * r, weight_q.options()).view(grid);
    if (shape.size() == 2) z = z.narrow(1, first, shape[1] + s - 1);
    auto code_of = [&](const at::Tensor& w) {
      return ops::depthwise_correlation(z, (w * scale).flatten(0, 1)).view({-1, h, d, r});
    };
    return {code_of(weight_q), code_of(weight_k)};
  }
  const at::Tensor rows_noise = keyed_normal_rows(key, 0, rows, h * d * r, weight_q.options());
  // (extents..., H*D, R) -> (R, H*D, extents...)
  std::vector<int64_t> noise_shape = extents, order{static_cast<int64_t>(extents.size()) + 1,
                                                    static_cast<int64_t>(extents.size())};
  noise_shape.insert(noise_shape.end(), {h * d, r});
  for (size_t axis = 0; axis < extents.size(); ++axis) order.push_back(static_cast<int64_t>(axis));
  const at::Tensor z = rows_noise.view(noise_shape).permute(order);

  auto code_of = [&](const at::Tensor& w) {
    at::Tensor c = depthwise_correlate(z, w, options.algorithm());  // (R, H*D, extent + 3S + 1 ...)
    for (size_t axis = 0; axis < shape.size(); ++axis) c = c.narrow(2 + axis, first, shape[axis]);
    // (R, H*D, L...) -> (L..., H, D, R) -> (N, H, D, R)
    std::vector<int64_t> out_order;
    for (size_t axis = 0; axis < shape.size(); ++axis) out_order.push_back(2 + axis);
    out_order.insert(out_order.end(), {1, 0});
    return c.permute(out_order).reshape({-1, h, d, r}) * scale;
  };
  return {code_of(weight_q), code_of(weight_k)};
}

ConvCodeStream::ConvCodeStream(const ConvSPEImpl& spe, uint64_t key, c10::optional<int64_t> realizations)
    : key_(key),
      realizations_(realizations.value_or(spe.options.realizations())),
      weight_q_(spe.weight_q.detach()),
      weight_k_(spe.weight_k.detach()) {
  TORCH_CHECK(spe.options.ndim() == 1, "ConvSPE: a code is extended position by position only for sequences (ndim 1), "
              "this module has ndim ", spe.options.ndim());
  detail::check_positive("ConvSPE", "realizations (R)", realizations_);
  const int64_t s = spe.options.kernel_size(), hd = spe.options.heads() * spe.options.dim();
  // window[j] = Z[t + S + j], j in [0, S): (S, H*D, R)
  window_ = keyed_normal_rows(key_, detail::conv_first_noise_row(0, s), s, hd * realizations_, weight_q_.options())
                .view({s, hd, realizations_});
}

SPECode ConvCodeStream::next() {
  const int64_t s = weight_q_.size(2), h = weight_q_.size(0), d = weight_q_.size(1);
  const double scale = detail::conv_code_scale(realizations_, d);
  // code[h d, r] = sum_j w[h d, j] Z[t + S + j][h d, r]
  auto code_of = [&](const at::Tensor& w) {
    return at::einsum("cj,jcr->cr", {w.reshape({h * d, s}), window_}).view({1, h, d, realizations_}) * scale;
  };
  SPECode code{code_of(weight_q_), code_of(weight_k_)};
  ++position_;
  // Slide the window by one position: drop Z[t + S], append Z[t + 2S].
  const at::Tensor incoming = keyed_normal_rows(key_, detail::conv_last_noise_row(position_, s), 1,
                                                h * d * realizations_, window_.options())
                                  .view({1, h * d, realizations_});
  window_ = at::cat({window_.narrow(0, 1, s - 1), incoming}, 0);
  return code;
}

at::Tensor ConvSPEImpl::expected_kernel(at::IntArrayRef shape,
                                        c10::optional<int64_t> realizations) const {
  check_shape(options, shape);
  const int64_t r = realizations.value_or(options.realizations());
  detail::check_positive("ConvSPE", "realizations (R)", r);
  // c[lag] = sum_j w_q[j] w_k[j + lag]: correlate w_k, zero-padded by L - 1 on both sides,
  // with w_q, so output index t is lag t - (L - 1).
  std::vector<int64_t> padding;
  for (auto it = shape.rbegin(); it != shape.rend(); ++it) padding.insert(padding.end(), {*it - 1, *it - 1});
  at::Tensor padded = at::constant_pad_nd(weight_k.flatten(0, 1).unsqueeze(0), padding, 0.0);
  at::Tensor c = depthwise_correlate(padded, weight_q, options.algorithm()).squeeze(0);  // (H*D, 2L - 1 ...)
  auto out_shape = c.sizes().vec();
  out_shape.erase(out_shape.begin());
  out_shape.insert(out_shape.begin(), {options.heads(), options.dim()});
  return c.reshape(out_shape) * std::sqrt(static_cast<double>(r) / options.dim());
}

}  // namespace spe
