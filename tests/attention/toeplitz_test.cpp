// A learned bias on the clipped distance (encoding/toeplitz.h): the module's lookups, and
// kernelized attention with e^(b(m - n)) on each pair, computed by FFT,
//   out_m = sum_n e^(b_h(m - n)) (phi_q_m . phi_k_n) v_n / sum_n e^(b_h(m - n)) (phi_q_m . phi_k_n)
// against explicit float64 loops (causal and not, padding), float32 against float64 at
// N = 512, through autograd, and softmax with the bias against its own loops.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"
#include "spe/encoding/toeplitz.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/weighted_attention.h"

namespace spe {
namespace {

// b_h(lag) from the (H, 2N - 1) table, lag in -(N - 1) .. N - 1.
double bias_at(const at::Tensor& lag_bias, int64_t h, int64_t lag) {
  return lag_bias[h][lag + (lag_bias.size(1) - 1) / 2].item<double>();
}

at::Tensor toeplitz_loops(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                          const at::Tensor& lag_bias, const at::Tensor& padding, bool causal) {
  auto weight = [&](int64_t h, int64_t lag) { return std::exp(bias_at(lag_bias, h, lag)); };
  return testing::weighted_linear_loops(phi_q, phi_k, v, weight, padding, causal);
}

struct ToeplitzInputs : testing::FeatureInputs {
  at::Tensor lag_bias;  // (H, 2N - 1)
};

ToeplitzInputs make_toeplitz_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t Dv) {
  testing::FeatureInputs features = testing::random_feature_inputs(B, N, H, M, Dv, 7);
  return {std::move(features), at::randn({H, 2 * N - 1}, at::kDouble)};
}

TEST(ToeplitzLinearAttention, MatchesExplicitLoopsWithPadding) {
  const ToeplitzInputs in = make_toeplitz_inputs(2, 9, 3, 4, 5);
  for (bool causal : {true, false})
    for (bool padded : {false, true}) {
      const at::Tensor padding = padded ? in.padding : at::Tensor();
      at::Tensor got = toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, in.lag_bias, causal, padding);
      at::Tensor expected = toeplitz_loops(in.phi_q, in.phi_k, in.v, in.lag_bias, padding, causal);
      EXPECT_TRUE(at::allclose(got, expected, 1e-10, 1e-12)) << "causal " << causal << " padded " << padded;
    }
}

// The FFT's rounding in float32 stays at float32's scale: N = 512 against the float64 result.
TEST(ToeplitzLinearAttention, Float32MatchesFloat64) {
  const ToeplitzInputs in = make_toeplitz_inputs(1, 512, 2, 4, 3);
  for (bool causal : {true, false}) {
    const at::Tensor want = toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, in.lag_bias, causal);
    const at::Tensor got = toeplitz_linear_attention(in.phi_q.to(at::kFloat), in.phi_k.to(at::kFloat),
                                                     in.v.to(at::kFloat), in.lag_bias.to(at::kFloat), causal);
    EXPECT_LT(((got.to(at::kDouble) - want).abs().max() / want.abs().max()).item<double>(), 1e-4) << causal;
  }
}

TEST(ToeplitzLinearAttention, GradientsMatchFiniteDifferences) {
  ToeplitzInputs in = make_toeplitz_inputs(1, 5, 2, 2, 2);
  for (at::Tensor* t : {&in.phi_q, &in.phi_k, &in.v, &in.lag_bias}) t->requires_grad_(true);
  for (bool causal : {true, false})
    testing::expect_gradients_match(
        [&] { return toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, in.lag_bias, causal).pow(2).sum(); },
        {{"phi_q", in.phi_q}, {"phi_k", in.phi_k}, {"v", in.v}, {"lag_bias", in.lag_bias}});
}

TEST(ToeplitzLinearAttention, BadInputIsNamed) {
  const ToeplitzInputs in = make_toeplitz_inputs(1, 4, 2, 3, 2);
  EXPECT_ERROR_CONTAINS(toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, in.lag_bias.narrow(1, 0, 5), true),
                        "lag_bias must be (H, 2N - 1) = (2, 7), got [2, 5]");
  EXPECT_ERROR_CONTAINS(toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, in.lag_bias.to(at::kFloat), true),
                        "lag_bias must have the inputs' dtype");
}

// The clipped form: windows of max(clip, 16) positions plus prefix sums for the far keys when
// the clip is short against N (several blocks, a last one cut short), the FFT otherwise.
TEST(ClippedToeplitzLinearAttention, MatchesExplicitLoopsForShortAndLongClips) {
  struct Case {
    int64_t length, clip;
  };
  for (const Case c : {Case{40, 3}, Case{70, 20}, Case{33, 16}, Case{9, 2}, Case{12, 12}, Case{6, 30}}) {
    const testing::FeatureInputs in = testing::random_feature_inputs(2, c.length, 2, 4, 5, 11);
    const at::Tensor bias = at::randn({2, 2 * c.clip + 1}, at::kDouble);
    auto weight = [&](int64_t h, int64_t lag) {
      return std::exp(bias[h][std::clamp(lag, -c.clip, c.clip) + c.clip].item<double>());
    };
    for (bool causal : {true, false})
      for (bool padded : {false, true}) {
        const at::Tensor padding = padded ? in.padding : at::Tensor();
        const at::Tensor got = clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, bias, causal, padding);
        const at::Tensor expected = testing::weighted_linear_loops(in.phi_q, in.phi_k, in.v, weight, padding, causal);
        EXPECT_TRUE(at::allclose(got, expected, 1e-10, 1e-12))
            << "N " << c.length << " clip " << c.clip << " causal " << causal << " padded " << padded;
      }
  }
}

TEST(ClippedToeplitzLinearAttention, GradientsMatchFiniteDifferences) {
  testing::FeatureInputs in = testing::random_feature_inputs(1, 35, 2, 2, 2, 12);  // 3 blocks of 16
  at::Tensor bias = at::randn({2, 5}, at::kDouble);
  for (at::Tensor* t : {&in.phi_q, &in.phi_k, &in.v, &bias}) t->requires_grad_(true);
  for (bool causal : {true, false})
    testing::expect_gradients_match(
        [&] { return clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, bias, causal).pow(2).sum(); },
        {{"phi_q", in.phi_q}, {"phi_k", in.phi_k}, {"v", in.v}, {"bias", bias}});
}

// Decoding: the step at each position equals the causal form there, past the clip (keys leave the
// window for the far sums) and with a clip longer than the sequence.
TEST(ClippedToeplitzLinearAttention, StepEqualsTheCausalFormAtEachPosition) {
  for (int64_t clip : {1, 3, 40}) {
    const testing::FeatureInputs in = testing::random_feature_inputs(2, 11, 2, 4, 5, 14);
    const at::Tensor bias = at::randn({2, 2 * clip + 1}, at::kDouble);
    const at::Tensor whole = clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, bias, true);
    ToeplitzState state;
    for (int64_t t = 0; t < 11; ++t) {
      const at::Tensor out = clipped_toeplitz_linear_attention_step(in.phi_q.select(1, t), in.phi_k.select(1, t),
                                                                    in.v.select(1, t), bias, state);
      ASSERT_TRUE(at::allclose(out, whole.select(1, t), 1e-10, 1e-12)) << "clip " << clip << " position " << t;
      EXPECT_EQ(state.keys.size(2), std::min<int64_t>(t + 1, clip));
    }
  }
  ToeplitzState state;
  const at::Tensor x = at::rand({1, 2, 3}, at::kDouble);
  EXPECT_ERROR_CONTAINS(clipped_toeplitz_linear_attention_step(x, x, x, at::zeros({3, 3}, at::kDouble), state),
                        "bias must be (H, 2 clip + 1) with H = 2");
}

TEST(ClippedToeplitzLinearAttention, BadBiasIsNamed) {
  const testing::FeatureInputs in = testing::random_feature_inputs(1, 4, 2, 3, 2, 13);
  EXPECT_ERROR_CONTAINS(clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, at::zeros({2, 4}, at::kDouble), true),
                        "bias must be (H, 2 clip + 1) with H = 2 and clip >= 1, got [2, 4]");
  EXPECT_ERROR_CONTAINS(clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, at::zeros({3, 5}, at::kDouble), true),
                        "with H = 2");
  EXPECT_ERROR_CONTAINS(clipped_toeplitz_linear_attention(in.phi_q, in.phi_k, in.v, at::zeros({2, 5}), false),
                        "bias must have the inputs' dtype");
}

TEST(ToeplitzBias, LagsBeyondTheClipShareItsBias) {
  ToeplitzBias toeplitz(ToeplitzBiasOptions(2).clip(3));
  toeplitz->to(at::kDouble);
  {
    at::NoGradGuard no_grad;
    toeplitz->bias.copy_(at::arange(14, at::kDouble).view({2, 7}));  // head h, lag l: 7 h + l + 3
  }
  const at::Tensor table = toeplitz->lag_bias(6);  // lags -5 .. 5
  const at::Tensor scores = toeplitz->score_bias(/*start=*/4, /*queries=*/2, /*keys=*/9);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t lag = -5; lag <= 5; ++lag)
      EXPECT_EQ(table[h][lag + 5].item<double>(), 7 * h + std::clamp<int64_t>(lag, -3, 3) + 3) << lag;
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t n = 0; n < 9; ++n)
        EXPECT_EQ(scores[h][i][n].item<double>(), 7 * h + std::clamp<int64_t>(4 + i - n, -3, 3) + 3);
  }
  EXPECT_TRUE(at::allclose(toeplitz->kernel(6), at::exp(table)));
  EXPECT_ERROR_CONTAINS(ToeplitzBias(ToeplitzBiasOptions(2).clip(0)), "ToeplitzBias: clip must be positive, got 0");
}

// Softmax with the bias: p_mn proportional to exp(q_m . k_n / sqrt(D) + b(m - n)).
TEST(ToeplitzBias, SoftmaxAddsTheBiasToTheScores) {
  at::manual_seed(8);
  const at::Tensor q = at::randn({1, 4, 2, 4}, at::kDouble), k = at::randn({1, 4, 2, 4}, at::kDouble);
  const at::Tensor v = at::randn({1, 4, 2, 3}, at::kDouble), lag_bias = at::randn({2, 7}, at::kDouble);
  ToeplitzBias toeplitz(ToeplitzBiasOptions(2).clip(3));
  toeplitz->to(at::kDouble);
  {
    at::NoGradGuard no_grad;
    toeplitz->bias.copy_(lag_bias);
  }
  const at::Tensor got = softmax_attention(q, k, v, AttentionMask::none(), nullptr, toeplitz->score_bias(0, 4, 4));
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t m = 0; m < 4; ++m) {
      at::Tensor numerator = at::zeros({3}, at::kDouble);
      double total = 0;
      for (int64_t n = 0; n < 4; ++n) {
        const double w = std::exp((q[0][m][h] * k[0][n][h]).sum().item<double>() / 2.0 + bias_at(lag_bias, h, m - n));
        numerator += w * v[0][n][h];
        total += w;
      }
      EXPECT_TRUE(at::allclose(got[0][m][h], numerator / total, 1e-10, 1e-12)) << "head " << h << " query " << m;
    }
}

}  // namespace
}  // namespace spe
