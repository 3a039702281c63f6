// The models: every positional encoding with every attention it supports builds, runs forward
// and backward; one layer against an explicit float64 computation; padding never changes what
// real tokens see; a language model never sees the future; the heads' shapes and errors.
#include "spe/nn/model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/errors.h"

namespace spe::nn {
namespace {

TransformerOptions small(PositionalKind pe, AttentionKind attention, int64_t vocab = 12) {
  TransformerOptions o(vocab);
  o.dim(16).heads(2).layers(2).ffn_dim(32).dropout(0.0);
  o.positional().kind(pe).realizations(8).sines(2).kernel_size(5).clip(3).max_length(64);
  o.attention().kind(attention).features(8);
  return o;
}

bool supported(PositionalKind pe, AttentionKind attention) {
  return pe != PositionalKind::shaw || attention == AttentionKind::softmax;
}

// Every encoding with every attention it supports, at every place and with every code it has.
struct Variant {
  std::string name;
  TransformerOptions options;
};
std::vector<Variant> every_variant() {
  std::vector<Variant> variants;
  for (const auto& pe : kPositionalKinds)
    for (const auto& attention : kAttentionKinds)
      if (supported(pe.value, attention.value))
        variants.push_back({std::string(pe.name) + " + " + attention.name, small(pe.value, attention.value)});
  for (PositionalKind pe : {PositionalKind::rotary, PositionalKind::sine_spe, PositionalKind::conv_spe})
    for (AttentionKind attention : {AttentionKind::linear, AttentionKind::favor}) {
      TransformerOptions o = small(pe, attention);
      o.positional().place(PositionalPlace::features);
      variants.push_back({fmt::format("{} on the features + {}", choice_name(pe, kPositionalKinds),
                                      choice_name(attention, kAttentionKinds)), o});
      if (pe != PositionalKind::sine_spe) continue;
      o.positional().code(SPECodeKind::exact);
      variants.push_back({"exact " + variants.back().name, o});
    }
  for (const auto& attention : kAttentionKinds) {
    TransformerOptions o = small(PositionalKind::decay, attention.value);
    o.positional().learnable_decay(true);
    variants.push_back({std::string("learnable decay + ") + attention.name, o});
  }
  TransformerOptions exact_softmax = small(PositionalKind::sine_spe, AttentionKind::softmax);
  exact_softmax.positional().code(SPECodeKind::exact);
  variants.push_back({"exact sine_spe + softmax", exact_softmax});
  return variants;
}

at::Tensor random_tokens(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(1, vocab, {batch, length}, at::kLong);
}

TEST(Model, EveryEncodingWithEveryAttentionTrains) {
  for (const Variant& variant : every_variant()) {
    for (ModelKind kind : {ModelKind::classifier, ModelKind::language_model}) {
      SCOPED_TRACE(variant.name + " " + choice_name(kind, kModelKinds));
      Model model(ModelOptions(kind, variant.options).num_classes(3));
      const at::Tensor tokens = random_tokens(2, 10, 12, 1);
      const at::Tensor logits = model(tokens, at::ones({2, 10}, at::kBool));
      const std::vector<int64_t> expected = kind == ModelKind::classifier ? std::vector<int64_t>{2, 3}
                                                                          : std::vector<int64_t>{2, 10, 12};
      EXPECT_EQ(logits.sizes(), at::IntArrayRef(expected));
      logits.pow(2).sum().backward();
      for (const auto& p : model->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
      }
    }
  }
}

// One block, float64, softmax attention without positions: every step written out by hand.
TEST(Model, BlockMatchesAnExplicitComputation) {
  TransformerOptions o = small(PositionalKind::none, AttentionKind::softmax);
  TransformerBlock block(o);
  block->to(at::kDouble);
  at::manual_seed(4);
  const at::Tensor x = at::randn({1, 5, 16}, at::kDouble);
  const at::Tensor out = block(x, AttentionMask::none(), SharedSPE{});
  auto layer_norm = [](const at::Tensor& v, const torch::nn::LayerNorm& n) {
    const at::Tensor mean = v.mean(-1, true), var = (v - mean).pow(2).mean(-1, true);
    return (v - mean) / at::sqrt(var + 1e-5) * n->weight + n->bias;
  };
  auto linear = [](const at::Tensor& v, const torch::nn::Linear& l) { return at::matmul(v, l->weight.t()) + l->bias; };
  const auto& a = block->attention;
  const at::Tensor h = layer_norm(x[0], block->norm1);  // (5, 16)
  at::Tensor heads_out = at::zeros({5, 16}, at::kDouble);
  for (int64_t head = 0; head < 2; ++head) {
    const at::Tensor q = linear(h, a->query).narrow(1, 8 * head, 8), k = linear(h, a->key).narrow(1, 8 * head, 8),
                     v = linear(h, a->value).narrow(1, 8 * head, 8);
    for (int64_t i = 0; i < 5; ++i) {
      at::Tensor scores = at::zeros({5}, at::kDouble);
      for (int64_t j = 0; j < 5; ++j) scores[j] = q[i].dot(k[j]) / std::sqrt(8.0);
      const at::Tensor p = at::exp(scores - scores.max()) / at::exp(scores - scores.max()).sum();
      heads_out[i].narrow(0, 8 * head, 8).copy_(at::matmul(p, v));
    }
  }
  const at::Tensor y = x[0] + linear(heads_out, a->output);
  const at::Tensor ffn = linear(at::gelu(linear(layer_norm(y, block->norm2), block->expand)), block->contract);
  EXPECT_TRUE(at::allclose(out[0], y + ffn, 1e-10, 1e-12));
}

// A sineSPE module's kernel for head h, feature d, written out:
// P_d(lag) = (1 / 2K) sum_k lambda_k^2 cos(2 pi f_k lag + theta_k).
double sine_kernel(const SineSPEImpl& sine, int64_t h, int64_t d, int64_t lag) {
  const int64_t sines = sine.freqs.size(2);
  double sum = 0;
  for (int64_t k = 0; k < sines; ++k) {
    const double f = 1.0 / (1.0 + std::exp(-sine.freqs[h][d][k].item<double>())) / 2.0;
    const double lambda = std::log1p(std::exp(sine.gains[h][d][k].item<double>()));
    sum += lambda * lambda * std::cos(2 * M_PI * f * lag + sine.offsets[h][d][k].item<double>());
  }
  return sum / (2.0 * static_cast<double>(sines));
}

// Softmax over exact sineSPE features: the scores are sum_d q_d k_d P_d(m - n) / sqrt(D), the
// temperature of q . k (not sqrt of the D 2K features), P_d the sine kernel written out here.
TEST(Model, ExactSineUnderSoftmaxScoresWithTheTemperatureOfQK) {
  TransformerOptions o = small(PositionalKind::sine_spe, AttentionKind::softmax);
  o.positional().sines(2).code(SPECodeKind::exact).gated(false).shared_code(false);
  SelfAttention layer(o);
  layer->to(at::kDouble);
  at::manual_seed(6);
  const at::Tensor x = at::randn({1, 5, 16}, at::kDouble);
  const at::Tensor out = layer->forward(x, AttentionMask::none(), SharedSPE{});
  auto linear = [](const at::Tensor& v, const torch::nn::Linear& l) { return at::matmul(v, l->weight.t()) + l->bias; };
  auto kernel = [&](int64_t h, int64_t d, int64_t lag) { return sine_kernel(*layer->sine_spe, h, d, lag); };
  at::Tensor heads_out = at::zeros({5, 16}, at::kDouble);
  for (int64_t head = 0; head < 2; ++head) {
    const at::Tensor q = linear(x[0], layer->query).narrow(1, 8 * head, 8),
                     k = linear(x[0], layer->key).narrow(1, 8 * head, 8),
                     v = linear(x[0], layer->value).narrow(1, 8 * head, 8);
    for (int64_t i = 0; i < 5; ++i) {
      at::Tensor scores = at::zeros({5}, at::kDouble);
      for (int64_t j = 0; j < 5; ++j) {
        double score = 0;
        for (int64_t d = 0; d < 8; ++d) score += q[i][d].item<double>() * k[j][d].item<double>() * kernel(head, d, i - j);
        scores[j] = score / std::sqrt(8.0);
      }
      heads_out[i].narrow(0, 8 * head, 8).copy_(at::matmul(at::softmax(scores, 0), v));
    }
  }
  EXPECT_TRUE(at::allclose(out[0], linear(heads_out, layer->output), 1e-10, 1e-12));
}

// Linear attention over exact gated sineSPE on the features, non-causal, with a padded key: the
// numerator's pair (m, n) weighs phi_q_m[d] phi_k_n[d] by (1 - s_d) P_d(m - n) + s_d, the normaliser
// by 1 (s_d the gate, P_d the sine kernel written out here); what the fused separable op computes.
TEST(Model, ExactSineOnLinearFeaturesWeighsEachPairByTheGatedKernel) {
  TransformerOptions o = small(PositionalKind::sine_spe, AttentionKind::linear);
  o.attention().feature_map(FeatureMapKind::relu);
  o.positional().sines(2).code(SPECodeKind::exact).place(PositionalPlace::features).shared_code(false);
  SelfAttention layer(o);
  layer->to(at::kDouble);
  at::manual_seed(8);
  const at::Tensor x = at::randn({2, 6, 16}, at::kDouble);
  at::Tensor padding = at::ones({2, 6}, at::kBool);
  padding[1][4] = false;
  const at::Tensor out = layer->forward(x, AttentionMask{padding, false}, SharedSPE{});
  auto linear = [](const at::Tensor& v, const torch::nn::Linear& l) { return at::matmul(v, l->weight.t()) + l->bias; };
  auto kernel = [&](int64_t h, int64_t d, int64_t lag) { return sine_kernel(*layer->sine_spe, h, d, lag); };
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor q = linear(x[b], layer->query).view({6, 2, 8}), k = linear(x[b], layer->key).view({6, 2, 8});
    const at::Tensor v = linear(x[b], layer->value).view({6, 2, 8});
    const at::Tensor phi_q = layer->feature_map(q.unsqueeze(0), FeatureRole::query)[0];  // (6, 2, 8)
    const at::Tensor phi_k = layer->feature_map(k.unsqueeze(0), FeatureRole::key)[0];
    at::Tensor heads_out = at::zeros({6, 16}, at::kDouble);
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 6; ++i) {
        at::Tensor numerator = at::zeros({8}, at::kDouble);
        double normaliser = 0;
        for (int64_t j = 0; j < 6; ++j) {
          if (!padding[b][j].item<bool>()) continue;
          double score = 0;
          for (int64_t d = 0; d < 8; ++d) {
            const double s = 1.0 / (1.0 + std::exp(-layer->spe_filter->gate[h][d].item<double>()));
            score += phi_q[i][h][d].item<double>() * phi_k[j][h][d].item<double>() * ((1 - s) * kernel(h, d, i - j) + s);
          }
          numerator += score * v[j][h];
          normaliser += phi_q[i][h].dot(phi_k[j][h]).item<double>();
        }
        heads_out[i].narrow(0, 8 * h, 8).copy_(numerator / std::max(normaliser, 1e-6));
      }
    EXPECT_TRUE(at::allclose(out[b], linear(heads_out, layer->output), 1e-10, 1e-12)) << "batch " << b;
  }
}

// Deterministic encodings in eval mode, and sineSPE with the same draw: padding at the end
// changes nothing for the real tokens.
TEST(Model, PaddingDoesNotChangeWhatRealTokensSee) {
  for (const Variant& variant : every_variant()) {
    // convSPE's code depends on the padded length
    if (variant.options.positional().kind() == PositionalKind::conv_spe) continue;
    SCOPED_TRACE(variant.name);
    Model model(ModelOptions(ModelKind::classifier, variant.options).num_classes(3));
    model->to(at::kDouble);
    model->eval();
    const at::Tensor tokens = random_tokens(2, 7, 12, 2);
    const at::Tensor padded = at::cat({tokens, at::zeros({2, 4}, at::kLong)}, 1);
    const at::Tensor mask = at::cat({at::ones({2, 7}, at::kBool), at::zeros({2, 4}, at::kBool)}, 1);
    at::manual_seed(9);
    const at::Tensor plain = model(tokens, at::ones({2, 7}, at::kBool));
    at::manual_seed(9);
    const at::Tensor with_padding = model(padded, mask);
    EXPECT_TRUE(at::allclose(plain, with_padding, 1e-9, 1e-11)) << plain << with_padding;
  }
}

TEST(Model, LanguageModelsNeverSeeTheFuture) {
  for (const Variant& variant : every_variant()) {
    SCOPED_TRACE(variant.name);
    Model model(ModelOptions(ModelKind::language_model, variant.options));
    model->to(at::kDouble);
    model->eval();
    at::Tensor tokens = random_tokens(1, 9, 12, 3);
    at::manual_seed(5);
    const at::Tensor before = model(tokens, at::Tensor());
    tokens.narrow(1, 6, 3).fill_(1);
    at::manual_seed(5);
    const at::Tensor after = model(tokens, at::Tensor());
    EXPECT_TRUE(at::allclose(before.narrow(1, 0, 6), after.narrow(1, 0, 6), 1e-9, 1e-11));
    EXPECT_FALSE(at::allclose(before.narrow(1, 6, 3), after.narrow(1, 6, 3), 1e-9, 1e-11));
  }
}

TEST(Model, HeadsPoolingTyingAndErrors) {
  const TransformerOptions o = small(PositionalKind::rotary, AttentionKind::linear);
  Model dual(ModelOptions(ModelKind::dual_encoder, o).num_classes(2).pooling(Pooling::cls));
  const at::Tensor a = random_tokens(3, 6, 12, 1), b = random_tokens(3, 4, 12, 2);
  EXPECT_EQ(dual(a, at::Tensor(), b, at::Tensor()).sizes(), (at::IntArrayRef{3, 2}));
  EXPECT_EQ(dual->transformer->embedding->weight.size(0), 13);  // the [CLS] row
  EXPECT_ERROR_CONTAINS(dual(a, at::Tensor()), "the second sequence of each pair is missing");
  Model tied(ModelOptions(ModelKind::language_model, o).tie_embeddings(true));
  Model untied(ModelOptions(ModelKind::language_model, o));
  EXPECT_EQ(parameter_count(*untied) - parameter_count(*tied), 16 * 12 + 12);
  EXPECT_EQ(tied(a, at::Tensor()).sizes(), (at::IntArrayRef{3, 6, 12}));
  EXPECT_ERROR_CONTAINS(untied(a.to(at::kInt), at::Tensor()), "tokens must be (B, N) int64");
  EXPECT_ERROR_CONTAINS(untied(a + 20, at::Tensor()), "token ids must lie in [0, 12)");
  EXPECT_ERROR_CONTAINS(Model(ModelOptions(ModelKind::classifier, o).num_classes(1)), "num_classes is 1");
  TransformerOptions odd = small(PositionalKind::rotary, AttentionKind::softmax);
  odd.dim(18).heads(2);
  EXPECT_ERROR_CONTAINS(Transformer{odd}, "rotary needs an even head dimension, dim / heads is 9");
  TransformerOptions grid = small(PositionalKind::conv_spe, AttentionKind::linear);
  grid.positional().conv_ndim(2);
  EXPECT_ERROR_CONTAINS(Transformer{grid}, "2-D convSPE needs sequences on a grid");
  grid.grid({3, 4});
  Transformer image(grid);
  EXPECT_EQ(image(random_tokens(2, 12, 12, 1)).sizes(), (at::IntArrayRef{2, 12, 16}));
  EXPECT_ERROR_CONTAINS(image(random_tokens(2, 13, 12, 1)), "13 tokens does not fit the 3 x 4 grid");
}

}  // namespace
}  // namespace spe::nn
