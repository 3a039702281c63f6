#include "spe/nn/sampling.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
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

namespace {

// allowed: (V) or (B, V) bool for logits (B, V), else std::invalid_argument. -> whether it is one
// row for all.
bool check_allowed(const at::Tensor& allowed, const at::Tensor& logits) {
  const int64_t b = logits.size(0), v = logits.size(1);
  const bool one_row = allowed.dim() == 1 && allowed.size(0) == v;
  if (allowed.scalar_type() != at::kBool || !(one_row || allowed.sizes() == logits.sizes()))
    throw std::invalid_argument(fmt::format("sampling: the allowed tokens are {} of shape [{}], expected bool of shape "
                                            "[{}] or [{}, {}]",
                                            c10::toString(allowed.scalar_type()), fmt::join(allowed.sizes(), ", "), v,
                                            b, v));
  return one_row;
}

}  // namespace

at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options, const at::Tensor& allowed) {
  TORCH_CHECK(logits.dim() == 2, "sampling: logits must be (B, V), got ", logits.sizes());
  check_sampling_options(options, logits.size(1));
  TORCH_CHECK(at::isfinite(logits).all().item<bool>(), "sampling: the logits contain NaN or infinity");
  constexpr double kNever = -std::numeric_limits<double>::infinity();
  at::Tensor scaled = logits.to(at::kDouble) / options.temperature;
  if (!options.banned.empty()) scaled.index_fill_(1, at::tensor(options.banned, at::kLong), kNever);
  if (allowed.defined()) {
    check_allowed(allowed, logits);
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
  TORCH_CHECK(logits.dim() == 2, "sampling: logits must be (B, V), got ", logits.sizes());
  const int64_t b = logits.size(0);
  const bool one_row = allowed.defined() && check_allowed(allowed, logits);
  const at::Tensor rows = logits.device().is_cpu() ? logits : logits.cpu();
  const at::Tensor mask = !allowed.defined() || allowed.device().is_cpu() ? allowed : allowed.cpu();
  TokenSampler sampler(options);
  at::Tensor tokens = at::empty({b}, at::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t token = sampler.draw(rows[i], !mask.defined() || one_row ? mask : mask[i], generator);
    if (token < 0)
      throw std::invalid_argument(fmt::format("sampling: row {} has no token left to draw (every token is banned or "
                                              "not allowed)",
                                              i));
    tokens.data_ptr<int64_t>()[i] = token;
  }
  return tokens.to(logits.device());
}

TokenSampler::TokenSampler(SamplingOptions options) : options_(std::move(options)) {}

namespace {

template <typename T>
bool scaled_logits(const T* logits, int64_t stride, int64_t vocab, double temperature, double* out) {
  for (int64_t i = 0; i < vocab; ++i) {
    const double x = static_cast<double>(logits[i * stride]);
    if (!std::isfinite(x)) return false;
    out[i] = x / temperature;
  }
  return true;
}

}  // namespace

int64_t TokenSampler::draw(const at::Tensor& logits, const at::Tensor& allowed, double u) {
  TORCH_CHECK((logits.dim() == 1 || (logits.dim() == 2 && logits.size(0) == 1)) && logits.device().is_cpu() &&
                  (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble),
              "TokenSampler: logits must be (V) or (1, V) float32 or float64 on the CPU, got ", logits.sizes(), " ",
              logits.scalar_type(), " on ", logits.device());
  const int64_t vocab = logits.size(-1);
  TORCH_CHECK(!allowed.defined() || (allowed.dim() == 1 && allowed.size(0) == vocab &&
                                     allowed.scalar_type() == at::kBool && allowed.device().is_cpu()),
              "TokenSampler: allowed must be (V) bool on the CPU with V = ", vocab);
  TORCH_CHECK(u >= 0.0 && u < 1.0, "TokenSampler: u must lie in [0, 1), got ", u);
  if (vocab != checked_vocab_) {
    check_sampling_options(options_, vocab);
    checked_vocab_ = vocab;
    probabilities_.resize(static_cast<size_t>(vocab));
    order_.resize(static_cast<size_t>(vocab));
  }
  double* p = probabilities_.data();
  const bool finite = logits.scalar_type() == at::kFloat
                          ? scaled_logits(logits.data_ptr<float>(), logits.stride(-1), vocab, options_.temperature, p)
                          : scaled_logits(logits.data_ptr<double>(), logits.stride(-1), vocab, options_.temperature, p);
  if (!finite) throw std::invalid_argument("sampling: the logits contain NaN or infinity");
  constexpr double kNever = -std::numeric_limits<double>::infinity();
  for (int64_t id : options_.banned) p[id] = kNever;
  if (allowed.defined()) {
    const bool* ok = allowed.data_ptr<bool>();
    for (int64_t i = 0; i < vocab; ++i)
      if (!ok[i * allowed.stride(0)]) p[i] = kNever;
  }
  // softmax over what is left
  const double top = *std::max_element(p, p + vocab);
  if (top == kNever) return -1;
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) total += (p[i] = std::exp(p[i] - top));
  for (int64_t i = 0; i < vocab; ++i) p[i] /= total;
  if (options_.top_p < 1.0) {
    // keep a token when the mass of the tokens before it, by decreasing probability, is below top_p
    std::iota(order_.begin(), order_.end(), int64_t{0});
    std::sort(order_.begin(), order_.end(), [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    double before = 0.0;
    for (int64_t id : order_) {
      const double mass = p[id];
      if (!(before < options_.top_p)) p[id] = 0.0;
      before += mass;
    }
  }
  total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) total += p[i];
  // invert the cumulative distribution over the ids in order
  const double target = u * total;
  double cumulative = 0.0;
  int64_t last = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[i] <= 0.0) continue;
    cumulative += p[i];
    last = i;
    if (cumulative > target) return i;
  }
  return last;  // u at the top end of the rounding
}

int64_t TokenSampler::draw(const at::Tensor& logits, const at::Tensor& allowed, at::Generator& generator) {
  auto* cpu = at::check_generator<at::CPUGeneratorImpl>(generator);
  uint64_t bits;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    bits = cpu->random64();
  }
  return draw(logits, allowed, static_cast<double>(bits >> 11) * 0x1.0p-53);
}

}  // namespace spe::nn
