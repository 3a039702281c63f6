// Generation with a tiny untrained language model: reproducible with a seed, the same tokens as
// the loop it replaced (prompt fed, then draw and feed back), stops at the stop token or the
// budget, never draws a token the constraint disallows, and names bad input.
#include "spe/nn/generate.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "support/errors.h"

namespace spe::nn {
namespace {

constexpr int64_t kTinyVocab = 9;

Model tiny_language_model() {
  TransformerOptions o(kTinyVocab);
  o.dim(16).heads(2).layers(2).ffn_dim(24).dropout(0.0);
  o.positional().kind(PositionalKind::sine_spe).realizations(6).sines(2).max_length(64);
  o.attention().kind(AttentionKind::linear);
  at::manual_seed(3);
  Model model(ModelOptions(ModelKind::language_model, o));
  model->eval();
  return model;
}

GenerateOptions options_of(int64_t max_tokens, int64_t stop_token = -1) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.stop_token = stop_token;
  o.sampling.banned = {0};
  return o;
}

Generation generate_with_seed(const Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                              uint64_t seed) {
  at::Generator generator = make_generator(seed);
  auto decoder = make_decoder(DecoderKind::recurrent, model, 1, generator);
  return generate(*decoder, prompt, o, generator);
}

// The loop `spe generate` ran before generate(): the prompt fed, then draw, keep, feed back.
std::vector<int64_t> old_loop(const Model& model, std::vector<int64_t> tokens, const SamplingOptions& sampling,
                              int64_t max_tokens, int64_t stop_token, uint64_t seed) {
  at::Generator generator = make_generator(seed);
  auto decoder = make_decoder(DecoderKind::recurrent, model, 1, generator);
  at::Tensor logits;
  for (int64_t token : tokens) logits = decoder->step(at::full({1}, token, at::kLong));
  for (int64_t generated = 0; generated < max_tokens;) {
    const int64_t next = sample_tokens(logits, sampling, generator).item<int64_t>();
    tokens.push_back(next);
    ++generated;
    if (next == stop_token) break;
    logits = decoder->step(at::full({1}, next, at::kLong));
  }
  return tokens;
}

TEST(Generate, IsTheOldLoopAndReproducibleWithASeed) {
  const Model model = tiny_language_model();
  const std::vector<int64_t> prompt{1, 4, 2};
  const GenerateOptions o = options_of(40);
  const Generation a = generate_with_seed(model, prompt, o, 5);
  EXPECT_EQ(a.tokens, old_loop(model, prompt, o.sampling, 40, -1, 5));
  EXPECT_EQ(a.tokens, generate_with_seed(model, prompt, o, 5).tokens);
  EXPECT_NE(a.tokens, generate_with_seed(model, prompt, o, 6).tokens);
  EXPECT_EQ(a.prompt_tokens, 3);
  EXPECT_EQ(a.generated, 40);
  EXPECT_FALSE(a.stopped);
  ASSERT_EQ(a.tokens.size(), 43u);
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), a.tokens.begin()));
  EXPECT_EQ(std::count(a.tokens.begin() + 3, a.tokens.end(), 0), 0);  // banned
  // An all-true mask changes nothing.
  GenerateOptions everything = o;
  everything.allowed = [](const std::vector<int64_t>&) { return at::ones({kTinyVocab}, at::kBool); };
  EXPECT_EQ(generate_with_seed(model, prompt, everything, 5).tokens, a.tokens);
}

TEST(Generate, StopsAtTheStopToken) {
  const Model model = tiny_language_model();
  const Generation g = generate_with_seed(model, {1}, options_of(500, 3), 2);
  ASSERT_TRUE(g.stopped);
  EXPECT_EQ(g.tokens.back(), 3);
  EXPECT_EQ(std::count(g.tokens.begin(), g.tokens.end(), 3), 1);
  EXPECT_EQ(g.generated, static_cast<int64_t>(g.tokens.size()) - 1);
  EXPECT_EQ(g.tokens, old_loop(model, {1}, options_of(500).sampling, 500, 3, 2));
  // A constraint that allows only the stop token after two draws ends there.
  GenerateOptions o = options_of(500, 3);
  o.allowed = [](const std::vector<int64_t>& tokens) {
    at::Tensor mask = at::ones({kTinyVocab}, at::kBool);
    if (tokens.size() >= 3) mask.fill_(false)[3] = true;
    else mask[3] = false;
    return mask;
  };
  const Generation short_one = generate_with_seed(model, {1}, o, 2);
  EXPECT_EQ(short_one.generated, 3);
  EXPECT_TRUE(short_one.stopped);
}

TEST(Generate, NeverDrawsADisallowedToken) {
  const Model model = tiny_language_model();
  GenerateOptions o = options_of(200);
  std::vector<at::Tensor> masks;  // the mask before each draw
  size_t expected_length = 2;
  o.allowed = [&](const std::vector<int64_t>& tokens) {
    EXPECT_EQ(tokens.size(), expected_length++);  // the tokens so far, one more each time
    // allowed: the ids i with (i + number of tokens so far) % 3 != 0, so the mask moves every step
    const at::Tensor mask = (at::arange(kTinyVocab, at::kLong) + static_cast<int64_t>(tokens.size())).remainder(3).ne(0);
    masks.push_back(mask);
    return mask;
  };
  const Generation g = generate_with_seed(model, {1, 2}, o, 9);
  ASSERT_EQ(masks.size(), 200u);
  for (size_t t = 0; t < masks.size(); ++t)
    EXPECT_TRUE(masks[t][g.tokens[t + 2]].item<bool>()) << "token " << g.tokens[t + 2] << " drawn at step " << t;
}

TEST(Generate, NamesBadInput) {
  const Model model = tiny_language_model();
  at::Generator generator = make_generator(1);
  auto fresh = [&] { return make_decoder(DecoderKind::recurrent, model, 1, generator); };
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {}, options_of(4), generator), "the prompt is empty");
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {1}, options_of(0), generator), "max_tokens is 0");
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {1}, options_of(4, kTinyVocab), generator), "stop_token is 9, expected an id in [0, 9)");
  auto pair = make_decoder(DecoderKind::recurrent, model, 2, generator);
  EXPECT_ERROR_CONTAINS(generate(*pair, {1}, options_of(4), generator), "decodes 2 sequences, expected 1");
  auto used = fresh();
  used->step(at::ones({1}, at::kLong));
  EXPECT_ERROR_CONTAINS(generate(*used, {1}, options_of(4), generator), "has already read 1 tokens");
  EXPECT_THROW(generate(*fresh(), {1, kTinyVocab}, options_of(4), generator), std::exception);  // not a token id

  GenerateOptions o = options_of(4);
  o.allowed = [](const std::vector<int64_t>&) { return at::ones({kTinyVocab + 1}, at::kBool); };
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {1}, o, generator),
                        "the allowed-next mask after 1 tokens is Bool of shape [10], expected bool of shape [9]");
  o.allowed = [](const std::vector<int64_t>&) { return at::ones({kTinyVocab}, at::kLong); };
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {1}, o, generator), "is Long of shape [9]");
  o.allowed = [](const std::vector<int64_t>&) { return at::Tensor(); };
  EXPECT_ERROR_CONTAINS(generate(*fresh(), {1}, o, generator), "is an undefined tensor");
  // Only the banned token allowed after the third token: nothing to draw, said where.
  o.allowed = [](const std::vector<int64_t>& tokens) {
    at::Tensor mask = at::zeros({kTinyVocab}, at::kBool);
    if (tokens.size() < 3) mask.fill_(true);
    mask[0] = true;
    return mask;
  };
  try {
    generate(*fresh(), {1}, o, generator);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("after 3 tokens (the last: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("leaves no token that is not banned"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace spe::nn
