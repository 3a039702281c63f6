// Exponential decay with the distance (encoding/decay.h): the module's decays, kernel and score
// bias, and decayed linear attention
//   out_m = sum_n g_h^|m - n| (phi_q_m . phi_k_n) v_n / sum_n g_h^|m - n| (phi_q_m . phi_k_n)
// against explicit float64 loops (causal and not, padding, chunk remainders, long sequences),
// step by step, through autograd, and softmax with the decay bias against its own loops.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"
#include "spe/encoding/decay.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/weighted_attention.h"

namespace spe {
namespace {

at::Tensor decayed_loops(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                         const at::Tensor& log_decay, const at::Tensor& padding, bool causal) {
  auto weight = [&](int64_t h, int64_t lag) { return std::pow(std::exp(log_decay[h].item<double>()), std::abs(lag)); };
  return testing::weighted_linear_loops(phi_q, phi_k, v, weight, padding, causal);
}

struct DecayInputs : testing::FeatureInputs {
  at::Tensor log_decay;  // (H,)
};

DecayInputs make_decay_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t Dv) {
  return {testing::random_feature_inputs(B, N, H, M, Dv, 5), at::log(at::linspace(0.5, 0.95, H, at::kDouble))};
}

TEST(DecayedLinearAttention, MatchesExplicitLoopsWithPadding) {
  const DecayInputs in = make_decay_inputs(2, 9, 3, 4, 5);
  for (bool causal : {true, false})
    for (bool padded : {false, true}) {
      const at::Tensor padding = padded ? in.padding : at::Tensor();
      at::Tensor got = decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay, causal, padding);
      at::Tensor expected = decayed_loops(in.phi_q, in.phi_k, in.v, in.log_decay, padding, causal);
      EXPECT_TRUE(at::allclose(got, expected, 1e-10, 1e-12)) << "causal " << causal << " padded " << padded;
    }
}

// Non-causal, on the CPU the fused sums run both ways: over several chunks of the kernel (32), with
// padding, against the loops; and its gradients across chunks.
TEST(DecayedLinearAttention, NonCausalOverSeveralChunksMatchesTheLoopsAndFiniteDifferences) {
  const DecayInputs in = make_decay_inputs(2, 70, 2, 3, 4);
  for (bool padded : {false, true}) {
    const at::Tensor padding = padded ? in.padding : at::Tensor();
    const at::Tensor got = decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay, false, padding);
    const at::Tensor expected = decayed_loops(in.phi_q, in.phi_k, in.v, in.log_decay, padding, false);
    EXPECT_TRUE(at::allclose(got, expected, 1e-10, 1e-12)) << "padded " << padded;
  }
  DecayInputs small = make_decay_inputs(1, 36, 1, 2, 2);
  for (at::Tensor* t : {&small.phi_q, &small.phi_k, &small.v, &small.log_decay}) t->requires_grad_(true);
  const at::Tensor w = at::randn({1, 36, 1, 2}, at::kDouble);
  testing::expect_gradients_match(
      [&] { return (decayed_linear_attention(small.phi_q, small.phi_k, small.v, small.log_decay, false) * w).sum(); },
      {{"phi_q", small.phi_q}, {"phi_k", small.phi_k}, {"v", small.v}, {"log_decay", small.log_decay}});
}

TEST(DecayedLinearAttention, ChunksOfEverySizeGiveTheSameProduct) {
  const DecayInputs in = make_decay_inputs(1, 13, 2, 3, 2);
  // sum_{n <= m} g^(m - n) (a_m . b_n) v_n with the decay matrix written out
  const at::Tensor m = at::arange(13, at::kDouble).unsqueeze(1), n = at::arange(13, at::kDouble).unsqueeze(0);
  const at::Tensor weights = at::exp(in.log_decay.view({-1, 1, 1}) * (m - n).clamp_min(0)) * (m >= n);  // (H, N, N)
  const at::Tensor scores = at::einsum("bmhf,bnhf->bhmn", {in.phi_q, in.phi_k}) * weights;
  const at::Tensor expected = at::einsum("bhmn,bnhd->bmhd", {scores, in.v});
  for (int64_t chunk : {1, 2, 4, 5, 13, 64})
    EXPECT_TRUE(at::allclose(decayed_causal_product(in.phi_q, in.phi_k, in.v, in.log_decay, chunk), expected, 1e-10,
                             1e-12))
        << "chunk " << chunk;
}

// No factor g^(-n) anywhere: at N = 3,000 with a strong decay the chunked form stays finite and
// equals the quadratic form built from g^(m - n) directly.
TEST(DecayedLinearAttention, LongSequencesStayFinite) {
  const int64_t N = 3000;
  at::manual_seed(2);
  const at::Tensor q = at::rand({1, N, 2, 2}, at::kDouble) + 0.1, k = at::rand({1, N, 2, 2}, at::kDouble) + 0.1;
  const at::Tensor v = at::randn({1, N, 2, 3}, at::kDouble);
  const at::Tensor log_decay = at::log(at::tensor({0.5, 0.999}, at::kDouble));
  const at::Tensor got = decayed_linear_attention(q, k, v, log_decay, /*causal=*/true);
  ASSERT_TRUE(at::isfinite(got).all().item<bool>());
  const at::Tensor m = at::arange(N, at::kDouble).unsqueeze(1), n = at::arange(N, at::kDouble).unsqueeze(0);
  const at::Tensor weights = at::exp(log_decay.view({-1, 1, 1}) * (m - n).clamp_min(0)) * (m >= n);
  const at::Tensor scores = at::einsum("bmhf,bnhf->bhmn", {q, k}) * weights;
  const at::Tensor expected = at::einsum("bhmn,bnhd->bmhd", {scores, v}) / scores.sum(-1).transpose(1, 2).unsqueeze(-1);
  EXPECT_TRUE(at::allclose(got, expected, 1e-9, 1e-11));
}

TEST(DecayedLinearAttention, StepByStepEqualsTheCausalForm) {
  const DecayInputs in = make_decay_inputs(2, 8, 3, 4, 5);
  const at::Tensor batch = decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay, /*causal=*/true);
  auto state = LinearAttentionState::zeros(2, 3, 4, 5, in.v.options());
  for (int64_t t = 0; t < 8; ++t) {
    at::Tensor out = decayed_causal_linear_attention_step(in.phi_q.select(1, t), in.phi_k.select(1, t),
                                                          in.v.select(1, t), in.log_decay, state);
    EXPECT_TRUE(at::allclose(out, batch.select(1, t), 1e-10, 1e-12)) << "position " << t;
  }
  EXPECT_EQ(state.position, 8);
}

TEST(DecayedLinearAttention, GradientsMatchFiniteDifferences) {
  DecayInputs in = make_decay_inputs(1, 6, 2, 2, 2);
  for (at::Tensor* t : {&in.phi_q, &in.phi_k, &in.v, &in.log_decay}) t->requires_grad_(true);
  for (bool causal : {true, false})
    testing::expect_gradients_match(
        [&] {
          return decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay, causal).pow(2).sum();
        },
        {{"phi_q", in.phi_q}, {"phi_k", in.phi_k}, {"v", in.v}, {"log_decay", in.log_decay}});
}

TEST(DecayedLinearAttention, BadInputIsNamed) {
  const DecayInputs in = make_decay_inputs(1, 4, 2, 3, 2);
  EXPECT_ERROR_CONTAINS(decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay.narrow(0, 0, 1), true),
                        "log_decay must be (H,) with H = 2");
  EXPECT_ERROR_CONTAINS(decayed_linear_attention(in.phi_q, in.phi_k, in.v, in.log_decay.to(at::kFloat), true),
                        "log_decay must have the inputs' dtype");
  EXPECT_ERROR_CONTAINS(decayed_linear_attention(in.phi_q.narrow(1, 0, 3), in.phi_k, in.v, in.log_decay, false),
                        "queries (3) and keys (4) must share their positions");
}

TEST(Decay, StartsSpreadOverHeadsAndLearnsOnlyWhenAsked) {
  Decay decay(DecayOptions(8));
  const at::Tensor g = at::exp(decay->log_decay().to(at::kDouble));
  for (int64_t h = 0; h < 8; ++h) EXPECT_NEAR(g[h].item<double>(), 1.0 - std::pow(2.0, -(5.0 + h)), 1e-6) << h;
  EXPECT_FALSE(decay->logits.requires_grad());
  EXPECT_TRUE(decay->parameters().empty());  // fixed: a buffer, saved but never optimised
  EXPECT_EQ(decay->named_buffers().size(), 1u);
  Decay learnable(DecayOptions(3).learnable(true));
  EXPECT_TRUE(learnable->logits.requires_grad());
  EXPECT_EQ(learnable->named_parameters().size(), 1u);
  EXPECT_NEAR(std::exp(Decay(DecayOptions(1))->log_decay().item<double>()), 1.0 - 1.0 / 32, 1e-6);
  EXPECT_ERROR_CONTAINS(Decay(DecayOptions(0)), "Decay: heads must be positive, got 0");
}

TEST(Decay, KernelAndScoreBiasAreTheDecayOfTheDistance) {
  Decay decay(DecayOptions(2));
  decay->to(at::kDouble);
  const at::Tensor g = at::exp(decay->log_decay());
  const at::Tensor kernel = decay->kernel(4);  // (H, 7): lags -3 .. 3
  ASSERT_EQ(kernel.sizes(), at::IntArrayRef({2, 7}));
  const at::Tensor bias = decay->score_bias(/*start=*/5, /*queries=*/2, /*keys=*/7);  // (H, 2, 7)
  for (int64_t h = 0; h < 2; ++h) {
    const double gh = g[h].item<double>();
    for (int64_t lag = -3; lag <= 3; ++lag)
      EXPECT_NEAR(kernel[h][lag + 3].item<double>(), std::pow(gh, std::abs(lag)), 1e-12);
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t n = 0; n < 7; ++n)
        EXPECT_NEAR(bias[h][i][n].item<double>(), std::abs(5 + i - n) * std::log(gh), 1e-12);
  }
}

// Softmax with the bias: p_mn proportional to exp(q_m . k_n / sqrt(D)) g^|m - n|.
TEST(Decay, SoftmaxWithTheBiasWeighsEachKeyByTheDecay) {
  at::manual_seed(3);
  const at::Tensor q = at::randn({1, 5, 2, 4}, at::kDouble), k = at::randn({1, 5, 2, 4}, at::kDouble);
  const at::Tensor v = at::randn({1, 5, 2, 3}, at::kDouble);
  Decay decay(DecayOptions(2));
  decay->to(at::kDouble);
  const at::Tensor got = softmax_attention(q, k, v, AttentionMask::none(), nullptr, decay->score_bias(0, 5, 5));
  for (int64_t h = 0; h < 2; ++h) {
    const double g = std::exp(decay->log_decay()[h].item<double>());
    for (int64_t m = 0; m < 5; ++m) {
      at::Tensor numerator = at::zeros({3}, at::kDouble);
      double total = 0;
      for (int64_t n = 0; n < 5; ++n) {
        const double w = std::exp((q[0][m][h] * k[0][n][h]).sum().item<double>() / 2.0) * std::pow(g, std::abs(m - n));
        numerator += w * v[0][n][h];
        total += w;
      }
      EXPECT_TRUE(at::allclose(got[0][m][h], numerator / total, 1e-10, 1e-12)) << "head " << h << " query " << m;
    }
  }
  EXPECT_ERROR_CONTAINS(softmax_attention(q, k, v, AttentionMask::none(), nullptr, decay->score_bias(0, 4, 5)),
                        "score_bias must be (H, Nq, Nk) = (2, 5, 5), got [2, 4, 5]");
}

}  // namespace
}  // namespace spe
