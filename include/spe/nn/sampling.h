#pragma once
// Choosing the next token from a language model's logits: temperature, banned and disallowed
// tokens removed, then nucleus (top-p) truncation (Holtzman et al. 2020) of what is left, then a
// draw.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace spe::nn {

struct SamplingOptions {
  double temperature = 1.0;  // > 0: logits are divided by it (0 < t < 1 sharpens)
  double top_p = 1.0;        // in (0, 1]: keep the most likely tokens whose mass first reaches top_p
  std::vector<int64_t> banned;  // token ids never drawn (padding, begin-of-sequence, ...)
};

// Throws std::invalid_argument naming a bad temperature, top_p or banned id.
void check_sampling_options(const SamplingOptions& options, int64_t vocab_size);

// logits: (B, V) -> the distribution sampling draws from, (B, V) float64 rows summing to 1.
// allowed: undefined (every token), or (V) or (B, V) bool: where it is false the probability is 0,
// as for a banned token. Throws std::invalid_argument when a row has no token left to draw.
at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options,
                                 const at::Tensor& allowed = {});

// logits: (B, V) -> (B) int64 token ids drawn from sampling_distribution (by TokenSampler, one
// uniform number from `generator` per row).
at::Tensor sample_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator,
                         const at::Tensor& allowed = {});

// One token at a time from a row of logits, on raw buffers kept from draw to draw (nothing is
// allocated after the first draw of a vocabulary size): the distribution of sampling_distribution,
// inverted at one uniform number u, over the token ids in order.
class TokenSampler {
 public:
  explicit TokenSampler(SamplingOptions options);  // checked against each row's vocabulary
  // logits: (V) or (1, V) float32 or float64 on the CPU, any stride; allowed: undefined or (V) bool on the
  // CPU. -> the first id whose cumulative probability passes u in [0, 1), or -1 when no token is
  // left to draw (every one banned or not allowed). Throws std::invalid_argument for non-finite
  // logits or a bad option.
  int64_t draw(const at::Tensor& logits, const at::Tensor& allowed, double u);
  // u drawn from `generator` (a CPU generator: 53 random bits).
  int64_t draw(const at::Tensor& logits, const at::Tensor& allowed, at::Generator& generator);

 private:
  SamplingOptions options_;
  int64_t checked_vocab_ = -1;        // the vocabulary the options were last checked against
  std::vector<double> probabilities_;  // (V)
  std::vector<int64_t> order_;        // (V) ids by decreasing probability, for top-p
};

}  // namespace spe::nn
