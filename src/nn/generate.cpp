#include "spe/nn/generate.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace spe::nn {
namespace {

void check_generate(const Decoder& decoder, const std::vector<int64_t>& prompt, const GenerateOptions& options) {
  if (prompt.empty())
    throw std::invalid_argument("generate: the prompt is empty, expected at least one token (e.g. begin-of-sequence)");
  if (decoder.batch() != 1)
    throw std::invalid_argument(fmt::format("generate: the decoder decodes {} sequences, expected 1", decoder.batch()));
  if (decoder.position() != 0)
    throw std::invalid_argument(fmt::format("generate: the decoder has already read {} tokens, expected a fresh one",
                                            decoder.position()));
  if (options.max_tokens < 1)
    throw std::invalid_argument(fmt::format("generate: max_tokens is {}, expected at least 1", options.max_tokens));
  if (options.stop_token < -1)
    throw std::invalid_argument(fmt::format("generate: stop_token is {}, expected a token id or -1 (none)",
                                            options.stop_token));
}

std::string describe_mask(const at::Tensor& mask) {
  if (!mask.defined()) return "an undefined tensor";
  return fmt::format("{} of shape [{}]", c10::toString(mask.scalar_type()), fmt::join(mask.sizes(), ", "));
}

// The (V) bool mask of the tokens that may be drawn after `tokens`, checked; undefined without a
// constraint.
at::Tensor allowed_after(const GenerateOptions& options, const std::vector<int64_t>& tokens, int64_t vocab_size) {
  if (!options.allowed) return {};
  const at::Tensor mask = options.allowed(tokens);
  if (!mask.defined() || mask.scalar_type() != at::kBool || mask.dim() != 1 || mask.size(0) != vocab_size)
    throw std::invalid_argument(fmt::format("generate: the allowed-next mask after {} tokens is {}, expected bool of "
                                            "shape [{}] (the model's vocabulary)",
                                            tokens.size(), describe_mask(mask), vocab_size));
  at::Tensor drawable = mask.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  if (!options.sampling.banned.empty()) drawable.index_fill_(0, at::tensor(options.sampling.banned, at::kLong), false);
  if (!drawable.any().item<bool>())
    throw std::runtime_error(fmt::format("generate: after {} tokens (the last: {}) the allowed-next mask leaves no "
                                         "token that is not banned: nothing to draw",
                                         tokens.size(), tokens.back()));
  return mask;
}

}  // namespace

Generation generate(Decoder& decoder, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                    at::Generator& generator) {
  check_generate(decoder, prompt, options);
  Generation out;
  out.tokens = prompt;
  out.prompt_tokens = static_cast<int64_t>(prompt.size());
  at::Tensor logits;  // (1, V)
  for (int64_t token : prompt) logits = decoder.step(at::full({1}, token, at::kLong));
  const int64_t vocab_size = logits.size(1);
  check_sampling_options(options.sampling, vocab_size);
  if (options.stop_token >= vocab_size)
    throw std::invalid_argument(fmt::format("generate: stop_token is {}, expected an id in [0, {})", options.stop_token,
                                            vocab_size));
  while (true) {
    const at::Tensor allowed = allowed_after(options, out.tokens, vocab_size);
    const int64_t next = sample_tokens(logits, options.sampling, generator, allowed).item<int64_t>();
    out.tokens.push_back(next);
    ++out.generated;
    out.stopped = next == options.stop_token;
    if (out.stopped || out.generated == options.max_tokens) break;
    logits = decoder.step(at::full({1}, next, at::kLong));
  }
  return out;
}

}  // namespace spe::nn
