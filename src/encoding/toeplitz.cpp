#include "spe/encoding/toeplitz.h"

#include <ATen/ATen.h>

#include <vector>

#include "lags.h"

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
  return bias_of(bias, detail::all_lags("ToeplitzBias::lag_bias", length, bias.device()), options.clip());
}

at::Tensor ToeplitzBiasImpl::kernel(int64_t length) const { return at::exp(lag_bias(length)); }

at::Tensor ToeplitzBiasImpl::score_bias(int64_t start, int64_t queries, int64_t keys) const {
  const at::Tensor lags = detail::query_key_lags("ToeplitzBias::score_bias", start, queries, keys, bias.device());
  return bias_of(bias, lags, options.clip());  // (H, Nq, Nk)
}

}  // namespace spe
