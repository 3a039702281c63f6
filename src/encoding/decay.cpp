#include "spe/encoding/decay.h"

#include <ATen/ATen.h>

#include "check.h"

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
  detail::check_positive("Decay::kernel", "length", length);
  at::Tensor distances = at::arange(-(length - 1), length, logits.options()).abs();  // (2N - 1,)
  return at::exp(log_decay().unsqueeze(1) * distances);
}

at::Tensor DecayImpl::score_bias(int64_t start, int64_t queries, int64_t keys) const {
  TORCH_CHECK(start >= 0, "Decay::score_bias: start must be >= 0, got ", start);
  detail::check_positive("Decay::score_bias", "queries", queries);
  detail::check_positive("Decay::score_bias", "keys", keys);
  at::Tensor m = at::arange(start, start + queries, logits.options()).unsqueeze(1);
  at::Tensor n = at::arange(keys, logits.options()).unsqueeze(0);
  return log_decay().view({-1, 1, 1}) * (m - n).abs();  // (H, Nq, Nk)
}

}  // namespace spe
