#include "spe/encoding/toeplitz.h"

#include <ATen/ATen.h>

#include <vector>

#include "check.h"

namespace spe {
namespace {

// The bias of every lag in `lags` (any shape, int64), clipped: (H, *lags.shape).
at::Tensor bias_of(const at::Tensor& bias, const at::Tensor& lags, int64_t clip) {
  const at::Tensor picked = bias.index_select(1, (lags.clamp(-clip, clip) + clip).flatten());  // (H, lags)
  std::vector<int64_t> shape{bias.size(0)};
  shape.insert(shape.end(), lags.sizes().begin(), lags.sizes().end());
  return picked.view(shape);
}

}  // namespace

ToeplitzBiasImpl::ToeplitzBiasImpl(const ToeplitzBiasOptions& options_) : options(options_) { reset(); }

void ToeplitzBiasImpl::reset() {
  detail::check_positive("ToeplitzBias", "heads", options.heads());
  detail::check_positive("ToeplitzBias", "clip", options.clip());
  bias = register_parameter("bias", at::zeros({options.heads(), 2 * options.clip() + 1}));
}

void ToeplitzBiasImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::ToeplitzBias(heads=" << options.heads() << ", clip=" << options.clip() << ")";
}

at::Tensor ToeplitzBiasImpl::lag_bias(int64_t length) const {
  detail::check_positive("ToeplitzBias::lag_bias", "length", length);
  return bias_of(bias, at::arange(-(length - 1), length, at::kLong).to(bias.device()), options.clip());
}

at::Tensor ToeplitzBiasImpl::kernel(int64_t length) const { return at::exp(lag_bias(length)); }

at::Tensor ToeplitzBiasImpl::score_bias(int64_t start, int64_t queries, int64_t keys) const {
  TORCH_CHECK(start >= 0, "ToeplitzBias::score_bias: start must be >= 0, got ", start);
  detail::check_positive("ToeplitzBias::score_bias", "queries", queries);
  detail::check_positive("ToeplitzBias::score_bias", "keys", keys);
  const auto longs = at::TensorOptions().dtype(at::kLong).device(bias.device());
  const at::Tensor lags = at::arange(start, start + queries, longs).unsqueeze(1) - at::arange(keys, longs).unsqueeze(0);
  return bias_of(bias, lags, options.clip());  // (H, Nq, Nk)
}

}  // namespace spe
