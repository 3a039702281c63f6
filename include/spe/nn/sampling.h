#pragma once
// Choosing the next token from a language model's logits: temperature, banned and disallowed
// tokens removed, then nucleus (top-p) truncation (Holtzman et al. 2020) of what is left, then a
// draw.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

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

// logits: (B, V) -> (B) int64 token ids drawn from sampling_distribution.
at::Tensor sample_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator,
                         const at::Tensor& allowed = {});

}  // namespace spe::nn
