#pragma once
// Generating one sequence with a language model's decoder (decoder.h): the prompt is read token
// by token, then tokens are drawn one at a time (sampling.h) and fed back, until the stop token
// or max_tokens. An optional constraint says which tokens may come next given the tokens so far
// (a grammar: for REMI tokens, midi::RemiGrammar); a token it disallows is never drawn.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "spe/nn/decoder.h"
#include "spe/nn/sampling.h"

namespace spe::nn {

// tokens so far (the prompt, then the tokens drawn) -> (V) bool, true where the next token may
// be drawn. Called once before each draw, with one token more each time, so that a grammar can
// keep its state and read only the new tokens. The mask is read before the next call, so a
// constraint may refill one tensor of its own each time (nothing allocated per token).
using AllowedNext = std::function<at::Tensor(const std::vector<int64_t>& tokens)>;

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_tokens = 512;  // tokens drawn at most, >= 1
  int64_t stop_token = -1;   // generation ends when it is drawn (it is kept); -1: none
  AllowedNext allowed;       // empty: every token that sampling does not ban
};

struct Generation {
  std::vector<int64_t> tokens;  // the prompt, then the tokens drawn
  int64_t prompt_tokens = 0;
  int64_t generated = 0;        // tokens drawn, the stop token included
  bool stopped = false;         // ended at the stop token (not at max_tokens)
};

// decoder: a fresh decoder (position 0) of one sequence (batch 1), which draws its SPE code from
// `generator` when made; the draws continue on the same generator. Without `allowed`, the tokens
// are those of feeding the prompt and then, max_tokens times, sample_tokens(logits) fed back.
// Throws std::invalid_argument for an empty prompt, a used or batched decoder, bad options or a
// mask of the wrong shape, and std::runtime_error when `allowed` leaves no token to draw.
Generation generate(Decoder& decoder, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                    at::Generator& generator);

}  // namespace spe::nn
