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

// The (V) bool mask of the tokens that may be drawn after `tokens`, checked, on the CPU; undefined
// without a constraint.
at::Tensor allowed_after(const GenerateOptions& options, const std::vector<int64_t>& tokens, int64_t vocab_size) {
  if (!options.allowed) return {};
  const at::Tensor mask = options.allowed(tokens);
  if (!mask.defined() || mask.scalar_type() != at::kBool || mask.dim() != 1 || mask.size(0) != vocab_size)
    throw std::invalid_argument(fmt::format("generate: the allowed-next mask after {} tokens is {}, expected bool of "
                                            "shape [{}] (the model's vocabulary)",
                                            tokens.size(), describe_mask(mask), vocab_size));
  return mask.device().is_cpu() ? mask : mask.cpu();
}

}  // namespace

Generation generate(Decoder& decoder, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                    at::Generator& generator) {
  check_generate(decoder, prompt, options);
  Generation out;
  out.tokens = prompt;
  out.prompt_tokens = static_cast<int64_t>(prompt.size());
  at::Tensor token = at::empty({1}, at::kLong);  // the next token fed, written in place
  int64_t* next_id = token.data_ptr<int64_t>();
  at::Tensor logits;  // (1, V)
  for (int64_t id : prompt) {
    *next_id = id;
    logits = decoder.step(token);
  }
  const int64_t vocab_size = logits.size(1);
  check_sampling_options(options.sampling, vocab_size);
  if (options.stop_token >= vocab_size)
    throw std::invalid_argument(fmt::format("generate: stop_token is {}, expected an id in [0, {})", options.stop_token,
                                            vocab_size));
  TokenSampler sampler(options.sampling);
  while (true) {
    const at::Tensor allowed = allowed_after(options, out.tokens, vocab_size);
    const at::Tensor row = logits.device().is_cpu() ? logits : logits.cpu();  // (1, V): no view made per token
    const int64_t next = sampler.draw(row, allowed, generator);
    if (next < 0)
      throw std::runtime_error(fmt::format("generate: after {} tokens (the last: {}) the allowed-next mask leaves no "
                                           "token that is not banned: nothing to draw",
                                           out.tokens.size(), out.tokens.back()));
    out.tokens.push_back(next);
    ++out.generated;
    out.stopped = next == options.stop_token;
    if (out.stopped || out.generated == options.max_tokens) break;
    *next_id = next;
    logits = decoder.step(token);
  }
  return out;
}

}  // namespace spe::nn
