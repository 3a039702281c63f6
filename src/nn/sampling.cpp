#include "spe/nn/sampling.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace spe::nn {

void check_sampling_options(const SamplingOptions& options, int64_t vocab_size) {
  if (!(options.temperature > 0.0))
    throw std::invalid_argument(fmt::format("temperature is {}, expected > 0", options.temperature));
  if (!(options.top_p > 0.0 && options.top_p <= 1.0))
    throw std::invalid_argument(fmt::format("top_p is {}, expected in (0, 1]", options.top_p));
  for (int64_t id : options.banned)
    if (id < 0 || id >= vocab_size)
      throw std::invalid_argument(fmt::format("banned token {} is not in [0, {})", id, vocab_size));
  if (static_cast<int64_t>(options.banned.size()) >= vocab_size)
    throw std::invalid_argument("every token is banned: nothing is left to draw");
}

at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options, const at::Tensor& allowed) {
  TORCH_CHECK(logits.dim() == 2, "sampling: logits must be (B, V), got ", logits.sizes());
  check_sampling_options(options, logits.size(1));
  TORCH_CHECK(at::isfinite(logits).all().item<bool>(), "sampling: the logits contain NaN or infinity");
  constexpr double kNever = -std::numeric_limits<double>::infinity();
  at::Tensor scaled = logits.to(at::kDouble) / options.temperature;
  if (!options.banned.empty()) scaled.index_fill_(1, at::tensor(options.banned, at::kLong), kNever);
  if (allowed.defined()) {
    const int64_t b = logits.size(0), v = logits.size(1);
    const bool one_row = allowed.dim() == 1 && allowed.size(0) == v;
    if (allowed.scalar_type() != at::kBool || !(one_row || allowed.sizes() == logits.sizes()))
      throw std::invalid_argument(fmt::format("sampling: the allowed tokens are {} of shape [{}], expected bool of shape "
                                              "[{}] or [{}, {}]",
                                              c10::toString(allowed.scalar_type()), fmt::join(allowed.sizes(), ", "), v,
                                              b, v));
    scaled.masked_fill_(allowed.logical_not().to(scaled.device()), kNever);
    const at::Tensor empty_rows = at::isfinite(scaled).any(1).logical_not().nonzero();
    if (empty_rows.numel() > 0)
      throw std::invalid_argument(fmt::format("sampling: row {} has no token left to draw (every token is banned or "
                                              "not allowed)",
                                              empty_rows[0].item<int64_t>()));
  }
  at::Tensor p = at::softmax(scaled, 1);
  if (options.top_p >= 1.0) return p;
  // Keep a token when the mass of the tokens strictly more likely than it is below top_p: the
  // smallest set, in order of probability, whose mass reaches top_p (the first always kept).
  auto [sorted, order] = p.sort(1, /*descending=*/true);
  const at::Tensor mass_before = sorted.cumsum(1) - sorted;
  const at::Tensor keep_sorted = mass_before < options.top_p;
  const at::Tensor keep = at::zeros_like(keep_sorted).scatter(1, order, keep_sorted);
  p = p * keep.to(p.scalar_type());
  return p / p.sum(1, /*keepdim=*/true);
}

at::Tensor sample_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator,
                         const at::Tensor& allowed) {
  return at::multinomial(sampling_distribution(logits, options, allowed), 1, false, generator).squeeze(1);
}

}  // namespace spe::nn
