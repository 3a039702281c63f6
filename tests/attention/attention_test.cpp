// Softmax and linear attention, masks and the recurrent step against explicit float64 loops.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"
#include "support/errors.h"
#include "support/gradcheck.h"

namespace spe {
namespace {

bool allowed(const at::Tensor& padding, bool causal, int64_t b, int64_t i, int64_t j) {
  return !(causal && j > i) && !(padding.defined() && !padding[b][j].item<bool>());
}

// out_i = sum_j w(i, j) v_j / sum_j w(i, j) over allowed j, with w = exp(q.k / sqrt(D)) for
// softmax or phi_q . phi_k for linear attention; zero when no key is allowed.
at::Tensor attention_loops(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& padding, bool causal, bool softmax) {
  const int64_t B = q.size(0), N = q.size(1), H = q.size(2), D = q.size(3);
  at::Tensor out = at::zeros({B, N, H, v.size(3)}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> weight(N, 0.0);
        double total = 0;
        for (int64_t j = 0; j < N; ++j) {
          if (!allowed(padding, causal, b, i, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[b][i][h][d].item<double>() * k[b][j][h][d].item<double>();
          weight[j] = softmax ? std::exp(dot / std::sqrt(double(D))) : dot;
          total += weight[j];
        }
        if (total == 0) continue;
        for (int64_t j = 0; j < N; ++j)
          for (int64_t d = 0; d < v.size(3); ++d) out[b][i][h][d] += weight[j] / total * v[b][j][h][d].item<double>();
      }
  return out;
}

struct Inputs {
  at::Tensor q, k, v, padding;
};
Inputs make_inputs(int64_t B, int64_t N, int64_t H, int64_t D, int64_t Dv, bool positive) {
  at::manual_seed(5);
  Inputs in{at::randn({B, N, H, D}, at::kDouble), at::randn({B, N, H, D}, at::kDouble),
            at::randn({B, N, H, Dv}, at::kDouble), at::ones({B, N}, at::kBool)};
  if (positive) {
    in.q = in.q.abs();
    in.k = in.k.abs();
  }
  if (B > 1) {
    in.padding[1][0] = false;  // batch 1: the first key is padding, so causal query 0 sees nothing
    in.padding[1][N - 1] = false;
  }
  return in;
}

TEST(SoftmaxAttention, MatchesExplicitLoopsWithMasks) {
  Inputs in = make_inputs(2, 6, 2, 3, 4, false);
  for (bool causal : {false, true})
    for (bool padded : {false, true}) {
      at::Tensor padding = padded ? in.padding : at::Tensor();
      at::Tensor got = softmax_attention(in.q, in.k, in.v, AttentionMask::padding(padding, causal));
      EXPECT_TRUE(at::allclose(got, attention_loops(in.q, in.k, in.v, padding, causal, true), 1e-10, 1e-12))
          << "causal " << causal << " padded " << padded;
      EXPECT_FALSE(got.isnan().any().item<bool>());
    }
  // causal and the first key padded: query 0 of batch 1 has nothing to attend to -> zeros
  at::Tensor got = softmax_attention(in.q, in.k, in.v, AttentionMask::padding(in.padding, true));
  EXPECT_EQ(got[1][0].abs().max().item<double>(), 0.0);
}

TEST(Attention, Float32AgreesWithFloat64) {
  Inputs in = make_inputs(2, 6, 2, 3, 4, true);
  auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat); };
  auto mask = AttentionMask::padding(in.padding, true);
  EXPECT_TRUE(at::allclose(softmax_attention(f32(in.q), f32(in.k), f32(in.v), mask).to(at::kDouble),
                           softmax_attention(in.q, in.k, in.v, mask), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(causal_linear_attention(f32(in.q), f32(in.k), f32(in.v), in.padding).to(at::kDouble),
                           causal_linear_attention(in.q, in.k, in.v, in.padding), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(linear_attention(f32(in.q), f32(in.k), f32(in.v), in.padding).to(at::kDouble),
                           linear_attention(in.q, in.k, in.v, in.padding), 1e-5, 1e-6));
}

TEST(SoftmaxAttention, BadInputIsNamed) {
  at::Tensor q = at::randn({2, 3, 2, 4});
  EXPECT_ERROR_CONTAINS(softmax_attention(q, q, q, AttentionMask::padding(at::ones({2, 3}))),
                        "key_padding must be bool (true = real token), got Float");
  EXPECT_ERROR_CONTAINS(softmax_attention(q, q, q, AttentionMask::padding(at::ones({2, 4}, at::kBool))),
                        "key_padding must be (B, Nk) = (2, 3), got [2, 4]");
  EXPECT_ERROR_CONTAINS(softmax_attention(q.flatten(2), q, q), "queries must be (B, Nq, H, D), got shape [2, 3, 8]");
  EXPECT_ERROR_CONTAINS(softmax_attention(q, at::randn({2, 3, 2, 5}), q), "must agree on B, H and D");
  EXPECT_ERROR_CONTAINS(softmax_attention(q, q, at::randn({2, 4, 2, 4})), "must agree on B, Nk and H");
  EXPECT_ERROR_CONTAINS(softmax_attention(q, q, q.to(at::kDouble)), "must share a dtype");
  EXPECT_ERROR_CONTAINS(softmax_attention(q.to(at::kLong), q.to(at::kLong), q.to(at::kLong)), "must be floating point");
}

TEST(LinearAttention, MatchesExplicitLoopsWithPadding) {
  Inputs in = make_inputs(2, 6, 2, 3, 4, true);
  for (bool padded : {false, true}) {
    at::Tensor padding = padded ? in.padding : at::Tensor();
    EXPECT_TRUE(at::allclose(linear_attention(in.q, in.k, in.v, padding),
                             attention_loops(in.q, in.k, in.v, padding, false, false), 1e-10, 1e-12));
    EXPECT_TRUE(at::allclose(causal_linear_attention(in.q, in.k, in.v, padding),
                             attention_loops(in.q, in.k, in.v, padding, true, false), 1e-10, 1e-12));
  }
  // query 0 of batch 1 sees only a padded key: zero output, not NaN
  at::Tensor out = causal_linear_attention(in.q, in.k, in.v, in.padding);
  EXPECT_EQ(out[1][0].abs().max().item<double>(), 0.0);
}

TEST(LinearAttention, RecurrentStepEqualsTheCausalForwardAtEveryPosition) {
  const int64_t B = 2, N = 9, H = 3, M = 4, Dv = 5;
  Inputs in = make_inputs(B, N, H, M, Dv, true);
  at::Tensor batch = causal_linear_attention(in.q, in.k, in.v);
  auto state = LinearAttentionState::zeros(B, H, M, Dv, in.q.options());
  const auto state_sizes = state.kv.sizes().vec();
  for (int64_t t = 0; t < N; ++t) {
    at::Tensor out = causal_linear_attention_step(in.q.select(1, t), in.k.select(1, t), in.v.select(1, t), state);
    EXPECT_TRUE(at::allclose(out, batch.select(1, t), 1e-10, 1e-12)) << "position " << t;
    EXPECT_EQ(state.kv.sizes().vec(), state_sizes);  // the state does not grow
    EXPECT_EQ(state.position, t + 1);
  }
}

TEST(LinearAttention, GradientsThroughTheCausalForm) {
  Inputs in = make_inputs(1, 4, 2, 3, 2, true);
  at::Tensor q = in.q.clone().requires_grad_(), k = in.k.clone().requires_grad_(), v = in.v.clone().requires_grad_();
  at::Tensor w = at::randn({1, 4, 2, 2}, at::kDouble);
  testing::expect_gradients_match([&] { return (causal_linear_attention(q, k, v) * w).sum(); },
                                  {{"phi_q", q}, {"phi_k", k}, {"v", v}});
}

TEST(LinearAttention, BadInputIsNamed) {
  at::Tensor x = at::rand({2, 3, 2, 4});
  EXPECT_ERROR_CONTAINS(linear_attention(x, x, x, {}, 0.0), "eps must be positive, got 0");
  EXPECT_ERROR_CONTAINS(causal_linear_attention(x, at::rand({2, 4, 2, 4}), at::rand({2, 4, 2, 4})),
                        "queries (3) and keys (4) must have the same length");
  EXPECT_ERROR_CONTAINS(linear_attention(x, x, x, at::ones({3, 3}, at::kBool)), "key_padding must be (B, Nk) = (2, 3)");
  auto state = LinearAttentionState::zeros(2, 2, 4, 3, x.options());
  EXPECT_ERROR_CONTAINS(causal_linear_attention_step(at::rand({2, 2, 5}), at::rand({2, 2, 5}), at::rand({2, 2, 3}), state),
                        "phi_q_t and phi_k_t must be (B, H, M) = (2, 2, 4), got [2, 2, 5]");
  EXPECT_ERROR_CONTAINS(causal_linear_attention_step(at::rand({2, 2, 4}), at::rand({2, 2, 4}), at::rand({2, 2, 2}), state),
                        "v_t must be (B, H, Dv) = (2, 2, 3), got [2, 2, 2]");
  EXPECT_ERROR_CONTAINS(LinearAttentionState::zeros(2, 0, 4, 3, x.options()), "sizes must be positive");
}

}  // namespace
}  // namespace spe
