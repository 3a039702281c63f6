#include "spe/encoding/decay.h"

#include <ATen/ATen.h>

#include "lags.h"

namespace spe {

DecayImpl::DecayImpl(const DecayOptions& options_) : options(options_) { reset(); }

void DecayImpl::reset() {
  detail::check_positive("Decay", "heads", options.heads());
  const int64_t h = options.heads();
  at::Tensor exponents = h == 1 ? at::full({1}, 5.0, at::kDouble) : 5.0 + 7.0 * at::arange(h, at::kDouble) / (h - 1);
  at::Tensor g = 1.0 - at::pow(2.0, -exponents);  // (H,)
  at::Tensor start = at::log(g / (1.0 - g)).to(at::get_default_dtype());
  // Fixed decays are a buffer: saved with the model, never handed to an optimizer.
  logits = options.learnable() ? register_parameter("logits", start) : register_buffer("logits", start);
}

void DecayImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::Decay(heads=" << options.heads() << ", learnable=" << (options.learnable() ? "true" : "false")
         << ")";
}

at::Tensor DecayImpl::log_decay() const { return at::log_sigmoid(logits); }

at::Tensor DecayImpl::kernel(int64_t length) const {
  const at::Tensor distances = detail::all_lags("Decay::kernel", length, logits.device()).abs().to(logits.dtype());
  return at::exp(log_decay().unsqueeze(1) * distances);  // (H, 2N - 1)
}

at::Tensor DecayImpl::score_bias(int64_t start, int64_t queries, int64_t keys) const {
  const at::Tensor lags = detail::query_key_lags("Decay::score_bias", start, queries, keys, logits.device());
  return log_decay().view({-1, 1, 1}) * lags.abs().to(logits.dtype());  // (H, Nq, Nk)
}

}  // namespace spe
