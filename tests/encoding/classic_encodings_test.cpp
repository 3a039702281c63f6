// Absolute (sinusoidal, learned), rotary and Shaw relative encodings against explicit loops.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "spe/attention/softmax.h"
#include "spe/encoding/absolute.h"
#include "spe/encoding/relative.h"
#include "spe/encoding/rotary.h"
#include "support/errors.h"
#include "support/tolerance.h"
#include "support/gradcheck.h"

namespace spe {
namespace {

TEST(SinusoidalEncoding, AddsTheVaswaniTable) {
  for (int64_t E : {6, 7}) {
    SinusoidalEncoding pe(E);
    at::Tensor x = at::randn({2, 5, E}, at::kDouble);
    at::Tensor y = pe->forward(x, 3);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t n = 0; n < 5; ++n)
        for (int64_t j = 0; j < E; ++j) {
          const double angle = (n + 3) / std::pow(10000.0, 2.0 * (j / 2) / E);
          const double table = j % 2 == 0 ? std::sin(angle) : std::cos(angle);
          EXPECT_NEAR(y[b][n][j].item<double>(), x[b][n][j].item<double>() + table, 1e-12);
        }
  }
  EXPECT_TRUE(SinusoidalEncoding(4)->parameters().empty());
}

TEST(LearnedEncoding, AddsTableRowsAndRefusesLongerSequences) {
  at::manual_seed(0);
  LearnedEncoding pe(LearnedEncodingOptions(6, 3));
  pe->to(at::kDouble);
  at::Tensor x = at::randn({2, 4, 3}, at::kDouble);
  at::Tensor y = pe->forward(x, 2);
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t j = 0; j < 3; ++j)
      EXPECT_NEAR(y[1][n][j].item<double>(), x[1][n][j].item<double>() + pe->weight[n + 2][j].item<double>(), 1e-15);
  EXPECT_ERROR_CONTAINS(pe->forward(x, 3), "positions 3 .. 6 requested but the table holds max_length = 6");
  EXPECT_ERROR_CONTAINS(pe->forward(at::randn({2, 4, 5}, at::kDouble)), "input has E = 5 features, expected 3");
  EXPECT_ERROR_CONTAINS(pe->forward(at::randn({4, 3}, at::kDouble)), "input must be (B, N, E), got shape [4, 3]");
  EXPECT_ERROR_CONTAINS(LearnedEncoding(LearnedEncodingOptions(0, 3)), "max_length must be positive, got 0");
  at::Tensor w = at::randn({2, 4, 3}, at::kDouble);
  testing::expect_gradients_match([&] { return (pe->forward(x, 1) * w).sum(); }, {{"weight", pe->weight}});
}

TEST(RotaryEncoding, RotatesPairsByPositionAngles) {
  const int64_t D = 6;
  RotaryEncoding rope(D);
  at::Tensor x = at::randn({1, 4, 2, D}, at::kDouble);
  at::Tensor y = rope->forward(x, 5);
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < D / 2; ++i) {
        const double angle = (n + 5) * std::pow(10000.0, -2.0 * i / D);
        const double a = x[0][n][h][2 * i].item<double>(), b = x[0][n][h][2 * i + 1].item<double>();
        EXPECT_NEAR(y[0][n][h][2 * i].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-12);
        EXPECT_NEAR(y[0][n][h][2 * i + 1].item<double>(), a * std::sin(angle) + b * std::cos(angle), 1e-12);
      }
}

// Each scaling's theta_i, written out from its paper's formula, one pair at a time.
double scaled_frequency(RotaryScaling scaling, int64_t i, int64_t D, double s, int64_t L) {
  const double theta = std::pow(10000.0, -2.0 * i / D);
  switch (scaling) {
    case RotaryScaling::none: return theta;
    case RotaryScaling::linear: return theta / s;                                     // n / s for n
    case RotaryScaling::ntk: return std::pow(10000.0 * std::pow(s, D / (D - 2.0)), -2.0 * i / D);
    case RotaryScaling::yarn: {
      const double periods = L / (2 * M_PI / theta);                                  // L / wavelength
      const double kept = std::min(1.0, std::max(0.0, (periods - 1.0) / 31.0));
      return (1 - kept) * theta / s + kept * theta;
    }
  }
  return 0;
}

TEST(RotaryEncoding, LengthScalingsFollowTheirFormulas) {
  const int64_t D = 16, L = 64;
  at::manual_seed(4);
  const at::Tensor x = at::randn({1, 3, 1, D}, at::kDouble);
  for (const auto& choice : kRotaryScalings)
    for (double s : {1.0, 4.0}) {
      SCOPED_TRACE(std::string(choice.name) + " x" + std::to_string(s));
      RotaryEncoding rope(RotaryEncodingOptions(D).scaling(choice.value).factor(s).original_length(L));
      const at::Tensor y = rope->forward(x, 100);
      const double magnitude = choice.value == RotaryScaling::yarn ? 0.1 * std::log(s) + 1 : 1.0;
      for (int64_t n = 0; n < 3; ++n)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double angle = (n + 100) * scaled_frequency(choice.value, i, D, s, L);
          const double a = x[0][n][0][2 * i].item<double>(), b = x[0][n][0][2 * i + 1].item<double>();
          EXPECT_NEAR(y[0][n][0][2 * i].item<double>(), magnitude * (a * std::cos(angle) - b * std::sin(angle)), 1e-10);
          EXPECT_NEAR(y[0][n][0][2 * i + 1].item<double>(), magnitude * (a * std::sin(angle) + b * std::cos(angle)),
                      1e-10);
        }
    }
}

TEST(RotaryEncoding, ScalingKeepsTheRelativeFormAndStretchesTheSlowPairs) {
  const int64_t D = 16, L = 1024;  // yarn: the fastest pair turns 163 times within L (> 32: kept)
  for (RotaryScaling scaling : {RotaryScaling::linear, RotaryScaling::ntk, RotaryScaling::yarn}) {
    SCOPED_TRACE(choice_name(scaling, kRotaryScalings));
    RotaryEncoding rope(D);
    rope->set_scaling(scaling, 4.0, L);
    const at::Tensor q = at::randn({1, 1, 1, D}, at::kDouble), k = at::randn({1, 1, 1, D}, at::kDouble);
    auto score = [&](int64_t m, int64_t n) { return (rope->forward(q, m) * rope->forward(k, n)).sum().item<double>(); };
    for (int64_t shift : {1, 500}) EXPECT_NEAR(score(shift + 9, shift), score(9, 0), 1e-9);
    // The slowest pair turns 4 times slower under every scaling; the fastest stays under ntk and yarn.
    const at::Tensor plain = RotaryEncoding(D)->frequencies(), scaled = rope->frequencies();
    EXPECT_NEAR(scaled[D / 2 - 1].item<double>(), plain[D / 2 - 1].item<double>() / 4, 1e-15);
    if (scaling != RotaryScaling::linear) {
      EXPECT_DOUBLE_EQ(scaled[0].item<double>(), plain[0].item<double>());
    }
  }
  RotaryEncoding rope(D);
  EXPECT_ERROR_CONTAINS(rope->set_scaling(RotaryScaling::linear, 0.5), "the scaling factor is 0.5, expected a finite value >= 1");
  EXPECT_ERROR_CONTAINS(rope->set_scaling(RotaryScaling::yarn, 2.0), "yarn scaling needs original_length");
  EXPECT_EQ(rope->options.scaling(), RotaryScaling::none);  // a refused change leaves the encoding as it was
  EXPECT_ERROR_CONTAINS(RotaryEncoding(RotaryEncodingOptions(2).scaling(RotaryScaling::ntk).factor(2)),
                        "ntk scaling needs dim >= 4, got 2");
}

TEST(RotaryEncoding, ScoreDependsOnlyOnTheOffset) {
  const int64_t D = 8;
  RotaryEncoding rope(D);
  at::Tensor q = at::randn({1, 1, 1, D}, at::kDouble), k = at::randn({1, 1, 1, D}, at::kDouble);
  auto score = [&](int64_t m, int64_t n) {
    return (rope->forward(q, m) * rope->forward(k, n)).sum().item<double>();
  };
  for (int64_t delta : {-7, 0, 3, 40}) {
    const double reference = score(100 + delta, 100);
    for (int64_t shift : {0, 1, 17, 1000}) EXPECT_NEAR(score(shift + 100 + delta, shift + 100), reference, 1e-9);
  }
  EXPECT_GT(std::abs(score(3, 0) - score(0, 0)), 1e-6);  // and it does depend on the offset
  EXPECT_ERROR_CONTAINS(RotaryEncoding(RotaryEncodingOptions(5)), "dim must be even (features rotate in pairs), got 5");
  EXPECT_ERROR_CONTAINS(rope->forward(at::randn({1, 2, 1, 6}, at::kDouble)), "input has D = 6, expected 8");
  EXPECT_ERROR_CONTAINS(rope->forward(at::ones({1, 2, 1, 8}, at::kLong)), "input must be floating point, got Long");
  EXPECT_ERROR_CONTAINS(rope->forward(at::randn({2, 8})), "input must be (B, N, H, D), got shape [2, 8]");
}

// Shaw et al. attention written out: e_ij = q_i . (k_j + wK_c(j-i)) / sqrt(D), masked softmax,
// z_i = sum_j a_ij (v_j + wV_c(j-i)). Explicit loops over i and j.
at::Tensor shaw_attention_loops(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& wk, const at::Tensor& wv, int64_t clip,
                                const at::Tensor& padding, bool causal) {
  const int64_t B = q.size(0), N = q.size(1), H = q.size(2), D = q.size(3);
  at::Tensor out = at::zeros_like(v);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> logits(N, -INFINITY);
        double top = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          if ((causal && j > i) || (padding.defined() && !padding[b][j].item<bool>())) continue;
          const int64_t r = std::clamp<int64_t>(j - i, -clip, clip) + clip;
          double e = 0;
          for (int64_t d = 0; d < D; ++d)
            e += q[b][i][h][d].item<double>() * (k[b][j][h][d].item<double>() + wk[r][d].item<double>());
          logits[j] = e / std::sqrt(double(D));
          top = std::max(top, logits[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < N; ++j) total += std::isinf(logits[j]) ? 0.0 : std::exp(logits[j] - top);
        for (int64_t j = 0; j < N; ++j) {
          if (std::isinf(logits[j])) continue;
          const double a = std::exp(logits[j] - top) / total;
          const int64_t r = std::clamp<int64_t>(j - i, -clip, clip) + clip;
          for (int64_t d = 0; d < v.size(3); ++d)
            out[b][i][h][d] += a * (v[b][j][h][d].item<double>() + (wv.defined() ? wv[r][d].item<double>() : 0.0));
        }
      }
  return out;
}

TEST(RelativePosition, ShawAttentionMatchesExplicitLoops) {
  const int64_t B = 2, N = 7, H = 2, D = 3, clip = 2;
  at::manual_seed(3);
  RelativePosition rpe(RelativePositionOptions(D, clip));
  rpe->to(at::kDouble);
  ASSERT_EQ(rpe->key_table.sizes(), at::IntArrayRef({2 * clip + 1, D}));
  at::Tensor q = at::randn({B, N, H, D}, at::kDouble), k = at::randn({B, N, H, D}, at::kDouble),
             v = at::randn({B, N, H, D}, at::kDouble);
  at::Tensor padding = at::ones({B, N}, at::kBool);
  padding[1][5] = false;
  padding[1][6] = false;
  for (bool causal : {false, true}) {
    at::Tensor got = softmax_attention(q, k, v, AttentionMask::padding(padding, causal), rpe.get());
    at::Tensor want = shaw_attention_loops(q, k, v, rpe->key_table, rpe->value_table, clip, padding, causal);
    EXPECT_TRUE(at::allclose(got, want, 1e-10, 1e-12)) << "causal " << causal;
  }
  RelativePosition keys_only(RelativePositionOptions(D, clip).on_values(false));
  keys_only->to(at::kDouble);
  EXPECT_FALSE(keys_only->value_table.defined());
  at::Tensor got = softmax_attention(q, k, v, {}, keys_only.get());
  EXPECT_TRUE(at::allclose(got, shaw_attention_loops(q, k, v, keys_only->key_table, {}, clip, {}, false), 1e-10, 1e-12));
}

TEST(RelativePosition, GradientsOfBothTables) {
  const int64_t N = 5, H = 2, D = 2;
  at::manual_seed(4);
  RelativePosition rpe(RelativePositionOptions(D, 1));
  rpe->to(at::kDouble);
  at::Tensor q = at::randn({1, N, H, D}, at::kDouble), k = at::randn({1, N, H, D}, at::kDouble),
             v = at::randn({1, N, H, D}, at::kDouble), w = at::randn({1, N, H, D}, at::kDouble);
  testing::expect_gradients_match(
      [&] { return (softmax_attention(q, k, v, AttentionMask::causal_only(), rpe.get()) * w).sum(); },
      {{"key_table", rpe->key_table}, {"value_table", rpe->value_table}});
}

TEST(RelativePosition, OtherDtypesTakeTheGatherPathToTheSameValues) {
  // bfloat16 is not the fused kernels' (ops/relative_buckets.h): ATen's gather and scatter_add
  // over bucket_index, the path of other devices, against float64's fused path; a wrong bucket
  // would be off by O(1), bfloat16's rounding is within 3e-2 of these magnitudes
  const int64_t Nq = 4, Nk = 7, H = 2, D = 3, clip = 2;
  at::manual_seed(6);
  RelativePosition rpe(RelativePositionOptions(D, clip));
  rpe->to(at::kDouble);
  const at::Tensor q = at::randn({2, Nq, H, D}, at::kDouble), weights = at::rand({2, H, Nq, Nk}, at::kDouble);
  EXPECT_LT(testing::relative_error(rpe->key_logits(q.to(at::kBFloat16), Nk), rpe->key_logits(q, Nk)), 3e-2);
  EXPECT_LT(testing::relative_error(rpe->value_term(weights.to(at::kBFloat16)), rpe->value_term(weights)), 3e-2);
}

TEST(RelativePosition, BadArgumentsAreNamed) {
  EXPECT_ERROR_CONTAINS(RelativePosition(RelativePositionOptions(4, 0)), "clip (k) must be positive, got 0");
  RelativePosition rpe(RelativePositionOptions(4, 2));
  at::Tensor q = at::randn({1, 3, 2, 4}), v = at::randn({1, 3, 2, 5});
  EXPECT_ERROR_CONTAINS(softmax_attention(q, q, v, {}, rpe.get()), "values have Dv = 5 but the relative value table has dim 4");
  at::Tensor q3 = at::randn({1, 3, 2, 3});
  EXPECT_ERROR_CONTAINS(softmax_attention(q3, q3, at::randn({1, 3, 2, 4}), {}, rpe.get()), "queries must be (B, N, H, 4), got shape [1, 3, 2, 3]");
}

}  // namespace
}  // namespace spe
