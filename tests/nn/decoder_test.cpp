// Token-by-token decoding: the recurrent decoder and the prefix decoder give, at every position,
// the logits of one full forward pass with the same SPE draw, for every encoding and attention a
// language model can have; bad uses are refused. Also the pieces the recurrent path rests on:
// noise keyed by position and the convSPE code extended one position at a time.
#include "spe/nn/decoder.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include "support/errors.h"

namespace spe::nn {
namespace {

constexpr int64_t kVocab = 11, kBatch = 2, kLength = 13;

struct Case {
  PositionalKind pe;
  AttentionKind attention;
  bool shared_code = true;
  bool gated = true;
  PositionalPlace place = PositionalPlace::inputs;
  SPECodeKind code = SPECodeKind::sampled;
  SPENoise noise = SPENoise::gaussian;
};

Model float64_language_model(const Case& c) {
  TransformerOptions o(kVocab);
  o.dim(16).heads(2).layers(2).ffn_dim(24).dropout(0.0);
  o.positional().kind(c.pe).realizations(6).sines(2).kernel_size(4).clip(3).max_length(32);
  o.positional().shared_code(c.shared_code).gated(c.gated).place(c.place).code(c.code).noise(c.noise);
  o.attention().kind(c.attention).features(8);
  at::manual_seed(3);
  Model model(ModelOptions(ModelKind::language_model, o));
  model->to(at::kDouble);
  model->eval();
  if (c.pe == PositionalKind::toeplitz) {  // its bias starts at zero, which every lag would match
    at::NoGradGuard no_grad;
    for (const auto& block : *model->transformer->blocks) block->as<TransformerBlock>()->attention->toeplitz->bias.normal_();
  }
  return model;
}

std::string describe(const Case& c) {
  return fmt::format("{} + {}{}{}, place {}, code {}, noise {}", choice_name(c.pe, kPositionalKinds),
                     choice_name(c.attention, kAttentionKinds), c.shared_code ? "" : ", code per layer",
                     c.gated ? "" : ", no gate", choice_name(c.place, kPositionalPlaces),
                     choice_name(c.code, kSPECodeKinds), choice_name(c.noise, kSPENoises));
}

// The logits of each position, one step at a time: (B, N, V).
at::Tensor decode_all(Decoder& decoder, const at::Tensor& tokens) {
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < tokens.size(1); ++t) steps.push_back(decoder.step(tokens.select(1, t)));
  return at::stack(steps, 1);
}

TEST(Decoder, EveryKindMatchesTheFullForwardWithTheSameDraw) {
  std::vector<Case> cases;
  for (PositionalKind pe : {PositionalKind::none, PositionalKind::sinusoidal, PositionalKind::learned,
                            PositionalKind::rotary, PositionalKind::sine_spe, PositionalKind::conv_spe,
                            PositionalKind::decay})
    for (AttentionKind attention : {AttentionKind::linear, AttentionKind::favor, AttentionKind::softmax})
      cases.push_back({pe, attention});
  cases.push_back({PositionalKind::shaw, AttentionKind::softmax});
  for (AttentionKind attention : {AttentionKind::linear, AttentionKind::favor, AttentionKind::softmax})
    cases.push_back({PositionalKind::toeplitz, attention});  // clip 3 < 13 positions: keys pass the clip
  for (PositionalKind pe : {PositionalKind::sine_spe, PositionalKind::conv_spe}) {
    cases.push_back({pe, AttentionKind::linear, false, true});
    cases.push_back({pe, AttentionKind::linear, true, false});
  }
  // The positional step on phi(q), phi(k) (numerator only), and the exact sineSPE features.
  constexpr auto features = PositionalPlace::features;
  for (PositionalKind pe : {PositionalKind::rotary, PositionalKind::sine_spe, PositionalKind::conv_spe})
    for (AttentionKind attention : {AttentionKind::linear, AttentionKind::favor})
      cases.push_back({pe, attention, true, true, features});
  for (bool shared : {true, false})
    for (bool gated : {true, false}) cases.push_back({PositionalKind::sine_spe, AttentionKind::linear, shared, gated,
                                                      features, SPECodeKind::exact});
  cases.push_back({PositionalKind::sine_spe, AttentionKind::favor, true, true, features, SPECodeKind::exact});
  cases.push_back({PositionalKind::sine_spe, AttentionKind::softmax, true, true, PositionalPlace::inputs,
                   SPECodeKind::exact});
  // Orthogonal draws: a gated code carries its gate's noise (drawn in the code's blocks).
  for (bool shared : {true, false})
    for (PositionalPlace place : {PositionalPlace::inputs, features})
      cases.push_back({PositionalKind::sine_spe, AttentionKind::linear, shared, true, place, SPECodeKind::sampled,
                       SPENoise::orthogonal});
  at::manual_seed(9);
  const at::Tensor tokens = at::randint(0, kVocab, {kBatch, kLength}, at::kLong);
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    Model model = float64_language_model(c);
    const at::Tensor full = model->forward(tokens, {}, {}, {}, make_generator(21));
    EXPECT_EQ(fastest_decoder(model), DecoderKind::fused);  // every decodable model of float32 or float64
    for (const auto& kind : kDecoderKinds) {
      SCOPED_TRACE(kind.name);
      auto decoder = make_decoder(kind.value, model, kBatch, make_generator(21));
      const at::Tensor stepped = decode_all(*decoder, tokens);
      EXPECT_EQ(decoder->position(), kLength);
      EXPECT_LT((stepped - full).abs().max().item<double>(), 1e-10);
    }
  }
}

// The fused step beyond the cases above: relu features, tied embeddings, float32 (against the
// recurrent step in float32, to its rounding), and a batch whose rows differ.
TEST(FusedDecoder, MatchesWithReluFeaturesTiedEmbeddingsAndFloat32) {
  at::manual_seed(4);
  const at::Tensor tokens = at::randint(0, kVocab, {3, kLength}, at::kLong);
  for (PositionalKind pe : {PositionalKind::sine_spe, PositionalKind::rotary, PositionalKind::sinusoidal})
    for (bool tied : {false, true}) {
      SCOPED_TRACE(fmt::format("{}, tied {}", choice_name(pe, kPositionalKinds), tied));
      TransformerOptions o(kVocab);
      o.dim(16).heads(2).layers(2).ffn_dim(12).dropout(0.0);  // ffn_dim < dim: buffers of both widths
      o.positional().kind(pe).realizations(6).sines(2);
      o.attention().feature_map(FeatureMapKind::relu);
      at::manual_seed(3);
      Model model(ModelOptions(ModelKind::language_model, o).tie_embeddings(tied));
      model->eval();
      auto recurrent = make_decoder(DecoderKind::recurrent, model, 3, make_generator(8));
      auto fused = make_decoder(DecoderKind::fused, model, 3, make_generator(8));
      const at::Tensor expected = decode_all(*recurrent, tokens), got = decode_all(*fused, tokens);
      EXPECT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4 * (1.0 + expected.abs().max().item<double>()));
      model->to(at::kDouble);
      const at::Tensor full = model->forward(tokens, {}, {}, {}, make_generator(8));
      auto fused64 = make_decoder(DecoderKind::fused, model, 3, make_generator(8));
      EXPECT_LT((decode_all(*fused64, tokens) - full).abs().max().item<double>(), 1e-10);
    }
}

// Softmax's key and value caches start with room for 256 positions and double when full: 600
// positions cross two doublings, with decay's, a Toeplitz bias's and Shaw's terms at every lag.
TEST(FusedDecoder, SoftmaxCachesGrowPastTheirFirstCapacity) {
  at::manual_seed(5);
  const at::Tensor tokens = at::randint(0, kVocab, {kBatch, 600}, at::kLong);
  for (PositionalKind pe :
       {PositionalKind::rotary, PositionalKind::decay, PositionalKind::toeplitz, PositionalKind::shaw}) {
    SCOPED_TRACE(choice_name(pe, kPositionalKinds));
    Model model = float64_language_model({pe, AttentionKind::softmax});
    const at::Tensor full = model->forward(tokens, {}, {}, {});
    auto fused = make_decoder(DecoderKind::fused, model, kBatch);
    EXPECT_LT((decode_all(*fused, tokens) - full).abs().max().item<double>(), 1e-10);
  }
}

TEST(FusedDecoder, RefusesBadTokensAndPositionsPastTheLearnedTable) {
  Model model = float64_language_model({PositionalKind::learned, AttentionKind::linear});  // max_length 32
  auto decoder = make_decoder(DecoderKind::fused, model, kBatch);
  decoder->step(at::zeros({kBatch}, at::kLong));  // position 0: the recurrent step's checks
  EXPECT_ERROR_CONTAINS(decoder->step(at::zeros({3}, at::kLong));, "(B) int64 on the CPU with B = 2");
  EXPECT_ERROR_CONTAINS(decoder->step(at::zeros({kBatch}, at::kInt));, "(B) int64");
  EXPECT_ERROR_CONTAINS(decoder->step(at::full({kBatch}, kVocab, at::kLong));, "[0, 11), got 11");
  EXPECT_ERROR_CONTAINS(decoder->step(at::full({kBatch}, -1, at::kLong));, "got -1");
  for (int64_t t = 1; t < 32; ++t) decoder->step(at::zeros({kBatch}, at::kLong));
  EXPECT_ERROR_CONTAINS(decoder->step(at::zeros({kBatch}, at::kLong));, "max_length = 32");
}

// Without the same draw the SPE logits differ: the equality above is not an accident of a code
// that does nothing.
TEST(Decoder, AnotherDrawGivesOtherSPELogits) {
  for (PositionalKind pe : {PositionalKind::sine_spe, PositionalKind::conv_spe}) {
    Model model = float64_language_model({pe, AttentionKind::linear});
    const at::Tensor tokens = at::randint(0, kVocab, {kBatch, 6}, at::kLong);
    const at::Tensor full = model->forward(tokens, {}, {}, {}, make_generator(1));
    auto decoder = make_decoder(DecoderKind::recurrent, model, kBatch, make_generator(2));
    EXPECT_GT((decode_all(*decoder, tokens) - full).abs().max().item<double>(), 1e-6);
  }
}

TEST(Decoder, RefusesWhatItCannotDecode) {
  Model model = float64_language_model({PositionalKind::none, AttentionKind::linear});
  auto decoder = make_decoder(DecoderKind::recurrent, model, kBatch);
  EXPECT_ERROR_CONTAINS(decoder->step(at::zeros({3}, at::kLong));, "(B) int64 with B = 2");
  EXPECT_ERROR_CONTAINS(decoder->step(at::full({kBatch}, kVocab, at::kLong));, "[0, 11)");
  EXPECT_ERROR_CONTAINS(make_decoder(DecoderKind::recurrent, model, 0);, "batch is 0");
  model->train();
  EXPECT_ERROR_CONTAINS(make_decoder(DecoderKind::recurrent, model, 1);, "eval mode");
  TransformerOptions o(kVocab);
  o.dim(8).heads(2).layers(1).ffn_dim(8);
  Model classifier(ModelOptions(ModelKind::classifier, o));
  classifier->eval();
  EXPECT_ERROR_CONTAINS(make_decoder(DecoderKind::prefix, classifier, 1);, "needs a language model");
  // The fused step reads float32 or float64 weights; another dtype keeps the op-by-op step.
  model->eval();
  model->to(at::kBFloat16);
  EXPECT_EQ(fastest_decoder(model), DecoderKind::recurrent);
  EXPECT_ERROR_CONTAINS(make_decoder(DecoderKind::fused, model, 1);,
                        "the fused decoder needs float32 or float64 weights on the CPU");
}

// The copy continues the original's stream, and each then moves on its own. (That the copies are
// freed is checked by LeakSanitizer in make test-sanitize: LibTorch's own clone() leaks them.)
TEST(CopyGenerator, ContinuesTheStreamIndependently) {
  at::Generator original = make_generator(5);
  at::empty({3}).normal_(0, 1, original);
  at::Generator copy = copy_generator(original);
  const at::Tensor from_copy = at::empty({4}, at::kDouble).normal_(0, 1, copy);
  const at::Tensor from_original = at::empty({4}, at::kDouble).normal_(0, 1, original);
  EXPECT_TRUE(at::equal(from_copy, from_original));
  at::empty({4}).normal_(0, 1, copy);
  EXPECT_FALSE(at::equal(at::empty({4}, at::kDouble).normal_(0, 1, copy),
                         at::empty({4}, at::kDouble).normal_(0, 1, original)));
}

TEST(KeyedNoise, RowsAreTheSameWhicheverRangeDrawsThem) {
  const at::Tensor whole = keyed_normal_rows(77, 0, 40, 9, at::kDouble);
  const at::Tensor middle = keyed_normal_rows(77, 13, 5, 9, at::kDouble);
  EXPECT_TRUE(at::equal(whole.narrow(0, 13, 5), middle));
  EXPECT_FALSE(at::equal(whole, keyed_normal_rows(78, 0, 40, 9, at::kDouble)));
  // One row in place, by a generator reseeded row after row (widths 9 and 33: LibTorch's normal_
  // fills 16 values or more another way), in any order, after the generator drew something else.
  at::Generator scratch = make_generator(5);
  at::empty({3}).normal_(0, 1, scratch);
  for (int64_t width : {9, 33}) {
    const at::Tensor rows = keyed_normal_rows(77, 0, 40, width, at::kDouble);
    at::Tensor row = at::empty({width}, at::kDouble);
    for (int64_t r : {17, 3, 39, 17}) {
      keyed_normal_row_into(77, r, row, scratch);
      EXPECT_TRUE(at::equal(row, rows[r])) << "width " << width << ", row " << r;
    }
  }
}

// n = 400 x 500 = 2e5 draws: the sample mean has sd 1/sqrt(n), the sample variance sd
// sqrt(2/n), and the correlation of neighbouring rows and of neighbouring columns sd
// 1/sqrt(n): each is checked at 5 sd (a false alarm about once in 3.5 million).
TEST(KeyedNoise, IsStandardNormalAndUncorrelated) {
  const at::Tensor z = keyed_normal_rows(12345, 1000, 400, 500, at::kDouble);
  const double n = static_cast<double>(z.numel()), bound = 5.0 / std::sqrt(n);
  EXPECT_LT(std::abs(z.mean().item<double>()), bound);
  EXPECT_LT(std::abs(z.var().item<double>() - 1.0), 5.0 * std::sqrt(2.0 / n));
  const double rows = (z.narrow(0, 1, 399) * z.narrow(0, 0, 399)).mean().item<double>();
  const double columns = (z.narrow(1, 1, 499) * z.narrow(1, 0, 499)).mean().item<double>();
  EXPECT_LT(std::abs(rows), 5.0 / std::sqrt(399.0 * 500.0));
  EXPECT_LT(std::abs(columns), 5.0 / std::sqrt(400.0 * 499.0));
  // The fraction inside one sd: 0.6827 for a normal, binomial sd sqrt(p (1 - p) / n).
  const double inside = (z.abs() < 1.0).to(at::kDouble).mean().item<double>();
  EXPECT_LT(std::abs(inside - 0.682689), 5.0 * std::sqrt(0.682689 * 0.317311 / n));
}

// The code stream of a decoded sequence reads, at each position, the row of the code a whole
// forward draws from the same generator: sineSPE through the fused filter at that row, convSPE
// through its own one-position code.
TEST(SPECodeStream, EachPositionReadsTheRowOfTheWholeDraw) {
  constexpr int64_t H = 2, D = 3, R = 4, N = 9;
  SineSPE sine(SineSPEOptions(H, D).sines(2));
  ConvSPE conv(ConvSPEOptions(H, D).kernel_size(3));
  sine->to(at::kDouble);
  conv->to(at::kDouble);
  SPEFilter filter(SPEFilterOptions(H, D).gated(false));
  const at::Tensor x = at::randn({2, N, H, D}, at::kDouble);
  for (bool is_sine : {true, false}) {
    SCOPED_TRACE(is_sine ? "sineSPE" : "convSPE");
    const SPECode whole = (is_sine ? sine->forward(N, R, make_generator(5)) : conv->forward({N}, R, make_generator(5)))
                              .materialise();
    SPECodeStream stream = is_sine ? SPECodeStream(*sine, R, make_generator(5)) : SPECodeStream(*conv, R, make_generator(5));
    for (int64_t t = 0; t < N; ++t) {
      const PositionCode at_t = stream.next();
      EXPECT_EQ(at_t.code->materialised(), !is_sine);  // sineSPE: one factored code for every position
      const at::Tensor x_t = x.narrow(1, t, 1);  // (B, 1, H, D)
      auto [q, k] = filter->filter(x_t, x_t, *at_t.code, at_t.row);
      ASSERT_LT((q - spe_apply_code(x_t, whole.qbar.narrow(0, t, 1))).abs().max().item<double>(), 1e-12) << t;
      ASSERT_LT((k - spe_apply_code(x_t, whole.kbar.narrow(0, t, 1))).abs().max().item<double>(), 1e-12) << t;
    }
    EXPECT_EQ(stream.position(), N);
  }
}

TransformerOptions causal_layer(PositionalKind pe, AttentionKind attention) {
  TransformerOptions o(kVocab);
  o.dim(16).heads(2).causal(true).dropout(0.0);
  o.positional().kind(pe).realizations(6).sines(2).kernel_size(4).clip(3).shared_code(false);
  o.attention().kind(attention);
  return o;
}

// One attention layer, alone: step at each position gives forward's output there, the layer
// drawing its own code and gate noise in the same order from the same generator.
TEST(SelfAttention, StepEqualsTheCausalForwardAtEachPosition) {
  const std::pair<PositionalKind, AttentionKind> kinds[] = {
      {PositionalKind::sine_spe, AttentionKind::linear}, {PositionalKind::conv_spe, AttentionKind::linear},
      {PositionalKind::decay, AttentionKind::linear},    {PositionalKind::rotary, AttentionKind::favor},
      {PositionalKind::shaw, AttentionKind::softmax},    {PositionalKind::toeplitz, AttentionKind::softmax},
      {PositionalKind::toeplitz, AttentionKind::linear}};
  const at::Tensor x = at::randn({kBatch, 7, 16}, at::kDouble);
  for (const auto& [pe, attention] : kinds) {
    SCOPED_TRACE(describe({pe, attention}));
    SelfAttention layer(causal_layer(pe, attention));
    layer->to(at::kDouble);
    layer->eval();
    at::NoGradGuard no_grad;
    const at::Tensor whole = layer->forward(x, AttentionMask::causal_only(), {}, make_generator(4));
    AttentionState state = layer->start_decoding(make_generator(4));
    for (int64_t t = 0; t < x.size(1); ++t) {
      const at::Tensor out = layer->step(x.narrow(1, t, 1), state, {});
      ASSERT_LT((out - whole.narrow(1, t, 1)).abs().max().item<double>(), 1e-10) << "position " << t;
    }
    EXPECT_EQ(state.position, x.size(1));
  }
}

TEST(SelfAttention, StepRefusesWhatHasNoRecurrentForm) {
  TransformerOptions bidirectional = causal_layer(PositionalKind::none, AttentionKind::linear);
  bidirectional.causal(false);
  EXPECT_ERROR_CONTAINS(SelfAttention(bidirectional)->start_decoding();, "needs a causal model");
  SelfAttention layer(causal_layer(PositionalKind::none, AttentionKind::linear));
  AttentionState state = layer->start_decoding();
  EXPECT_ERROR_CONTAINS(layer->step(at::randn({1, 2, 16}), state, {});, "x must be (B, 1, E), got [1, 2, 16]");
  SelfAttention sampled(causal_layer(PositionalKind::sine_spe, AttentionKind::linear).positional(
      PositionalOptions().kind(PositionalKind::sine_spe).realizations(4)));
  AttentionState no_code;
  EXPECT_ERROR_CONTAINS(sampled->step(at::randn({1, 1, 16}), no_code, {});, "needs the model's code of the position");
  Transformer one_layer(TransformerOptions(causal_layer(PositionalKind::none, AttentionKind::linear)).layers(1));
  Transformer two_layers(TransformerOptions(causal_layer(PositionalKind::none, AttentionKind::linear)).layers(2));
  DecodingState of_two = two_layers->start_decoding();
  EXPECT_ERROR_CONTAINS(one_layer->step(at::zeros({1}, at::kLong), of_two);, "the state holds 2 layers, the model has 1");
}

TEST(ConvCodeStream, ExtendsTheCodeOfTheSameKey) {
  ConvSPE spe(ConvSPEOptions(2, 3).kernel_size(5).realizations(4));
  spe->to(at::kDouble);
  const SPECode whole = spe->code_for_key({17}, 99);
  ConvCodeStream stream(*spe, 99);
  for (int64_t t = 0; t < 17; ++t) {
    const SPECode code = stream.next();
    ASSERT_LT((code.qbar[0] - whole.qbar[t]).abs().max().item<double>(), 1e-12) << "position " << t;
    ASSERT_LT((code.kbar[0] - whole.kbar[t]).abs().max().item<double>(), 1e-12) << "position " << t;
  }
  ConvSPE image(ConvSPEOptions(2, 3).ndim(2).kernel_size(3));
  EXPECT_ERROR_CONTAINS(ConvCodeStream(*image, 1);, "only for sequences");
}

}  // namespace
}  // namespace spe::nn
