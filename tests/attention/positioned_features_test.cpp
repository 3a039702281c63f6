// Linear attention with positioned numerator features (RoFormer's linear form, SPE on phi):
// out_m = sum_n (psi_q_m . psi_k_n) v_n / sum_n (phi_q_m . phi_k_n), against explicit float64
// loops, with padding, causal, chunked, step by step and through autograd.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "spe/attention/linear.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/weighted_attention.h"

namespace spe {
namespace {

// The definition, one pair (m, n) at a time: psi in the numerator, phi in the normaliser; a query
// with no allowed key gets zeros.
at::Tensor positioned_loops(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& psi_q,
                            const at::Tensor& psi_k, const at::Tensor& v, const at::Tensor& padding, bool causal) {
  using testing::pair_dot;
  return testing::pairwise_linear_loops(
      v, padding, causal, [&](int64_t b, int64_t h, int64_t m, int64_t n) { return pair_dot(psi_q, psi_k, b, h, m, n); },
      [&](int64_t b, int64_t h, int64_t m, int64_t n) { return pair_dot(phi_q, phi_k, b, h, m, n); });
}

struct PositionedInputs {
  at::Tensor phi_q, phi_k, psi_q, psi_k, v, padding;
};

// Positive phi of M features; psi of P features of either sign, as rotated or filtered ones are.
PositionedInputs make_positioned_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t P, int64_t Dv) {
  at::manual_seed(11);
  PositionedInputs in{at::rand({B, N, H, M}, at::kDouble) + 0.1, at::rand({B, N, H, M}, at::kDouble) + 0.1,
            at::randn({B, N, H, P}, at::kDouble),      at::randn({B, N, H, P}, at::kDouble),
            at::randn({B, N, H, Dv}, at::kDouble),     at::ones({B, N}, at::kBool)};
  in.padding[1][0] = false;  // batch 1: its first key is padding, so causal query 0 sees nothing
  in.padding[1][N - 1] = false;
  return in;
}

TEST(PositionedLinearAttention, MatchesExplicitLoopsWithPadding) {
  PositionedInputs in = make_positioned_inputs(2, 7, 2, 3, 5, 4);
  for (bool causal : {false, true})
    for (bool padded : {false, true}) {
      at::Tensor padding = padded ? in.padding : at::Tensor();
      const PositionedFeatures numerator{in.psi_q, in.psi_k};
      at::Tensor got = causal ? causal_linear_attention(in.phi_q, in.phi_k, in.v, numerator, padding)
                              : linear_attention(in.phi_q, in.phi_k, in.v, numerator, padding);
      at::Tensor expected = positioned_loops(in.phi_q, in.phi_k, in.psi_q, in.psi_k, in.v, padding, causal);
      EXPECT_TRUE(at::allclose(got, expected, 1e-10, 1e-12)) << "causal " << causal << " padded " << padded;
    }
  at::Tensor out = causal_linear_attention(in.phi_q, in.phi_k, in.v, {in.psi_q, in.psi_k}, in.padding);
  EXPECT_EQ(out[1][0].abs().max().item<double>(), 0.0);  // nothing to attend to: zeros, not NaN
}

TEST(PositionedLinearAttention, PlainFeaturesAsNumeratorGiveLinearAttention) {
  PositionedInputs in = make_positioned_inputs(2, 6, 2, 3, 3, 4);
  EXPECT_TRUE(at::allclose(linear_attention(in.phi_q, in.phi_k, in.v, {in.phi_q, in.phi_k}, in.padding),
                           linear_attention(in.phi_q, in.phi_k, in.v, in.padding), 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(causal_linear_attention(in.phi_q, in.phi_k, in.v, {in.phi_q, in.phi_k}, in.padding),
                           causal_linear_attention(in.phi_q, in.phi_k, in.v, in.padding), 1e-10, 1e-12));
}

TEST(CausalProduct, MatchesTheMaskedProductForEveryChunkSize) {
  PositionedInputs in = make_positioned_inputs(2, 11, 3, 3, 4, 5);
  // sum_{n <= m} (a_m . b_n) v_n, quadratic
  at::Tensor scores = at::einsum("bmhp,bnhp->bhmn", {in.psi_q, in.psi_k}).tril();
  at::Tensor expected = at::einsum("bhmn,bnhd->bmhd", {scores, in.v});
  for (int64_t chunk : {1, 2, 3, 4, 11, 16})  // remainders, one chunk, a chunk longer than N
    EXPECT_TRUE(at::allclose(causal_product(in.psi_q, in.psi_k, in.v, chunk), expected, 1e-10, 1e-12))
        << "chunk " << chunk;
}

TEST(PositionedLinearAttention, RecurrentStepEqualsTheCausalForm) {
  const int64_t B = 2, N = 9, H = 2, M = 3, P = 5, Dv = 4;
  PositionedInputs in = make_positioned_inputs(B, N, H, M, P, Dv);
  at::Tensor batch = causal_linear_attention(in.phi_q, in.phi_k, in.v, {in.psi_q, in.psi_k});
  auto state = LinearAttentionState::zeros(B, H, M, Dv, in.v.options(), P);
  for (int64_t t = 0; t < N; ++t) {
    at::Tensor out = causal_linear_attention_step(in.phi_q.select(1, t), in.phi_k.select(1, t), in.v.select(1, t),
                                                  {in.psi_q.select(1, t), in.psi_k.select(1, t)}, state);
    EXPECT_TRUE(at::allclose(out, batch.select(1, t), 1e-10, 1e-12)) << "position " << t;
  }
  EXPECT_EQ(state.kv.sizes().vec(), (std::vector<int64_t>{B, H, P, Dv}));  // flat in the position
  EXPECT_EQ(state.normalizer.sizes().vec(), (std::vector<int64_t>{B, H, M}));
}

TEST(PositionedLinearAttention, Gradients) {
  PositionedInputs in = make_positioned_inputs(2, 5, 1, 2, 3, 2);
  for (at::Tensor* t : {&in.phi_q, &in.phi_k, &in.psi_q, &in.psi_k, &in.v}) *t = t->clone().requires_grad_();
  const std::vector<std::pair<std::string, at::Tensor>> leaves{
      {"phi_q", in.phi_q}, {"phi_k", in.phi_k}, {"psi_q", in.psi_q}, {"psi_k", in.psi_k}, {"v", in.v}};
  const at::Tensor w = at::randn({2, 5, 1, 2}, at::kDouble);
  for (bool causal : {false, true})
    testing::expect_gradients_match(
        [&] {
          const PositionedFeatures numerator{in.psi_q, in.psi_k};
          return ((causal ? causal_linear_attention(in.phi_q, in.phi_k, in.v, numerator, in.padding)
                          : linear_attention(in.phi_q, in.phi_k, in.v, numerator, in.padding)) * w).sum();
        },
        leaves);
}

TEST(PositionedLinearAttention, BadInputIsNamed) {
  PositionedInputs in = make_positioned_inputs(2, 4, 2, 3, 5, 4);
  EXPECT_ERROR_CONTAINS(linear_attention(in.phi_q, in.phi_k, in.v, {in.psi_q, in.psi_k.narrow(3, 0, 4)}),
                        "positioned query features have P = 5, key features P = 4");
  EXPECT_ERROR_CONTAINS(linear_attention(in.phi_q, in.phi_k, in.v, {in.psi_q.narrow(1, 0, 3), in.psi_k}),
                        "must agree with phi_q [2, 4, 2, 3]");
  EXPECT_ERROR_CONTAINS(linear_attention(in.phi_q, in.phi_k, in.v, {in.psi_q.to(at::kFloat), in.psi_k}),
                        "must have the dtype and device of phi_q");
  EXPECT_ERROR_CONTAINS(causal_linear_attention(in.phi_q, in.phi_k, in.v, {at::Tensor(), in.psi_k}),
                        "the positioned features are undefined");
  EXPECT_ERROR_CONTAINS(causal_product(in.psi_q, in.psi_k, in.v, 0), "chunk must be positive, got 0");
  auto state = LinearAttentionState::zeros(2, 2, 3, 4, in.v.options(), 5);
  EXPECT_ERROR_CONTAINS(causal_linear_attention_step(in.phi_q.select(1, 0), in.phi_k.select(1, 0), in.v.select(1, 0),
                                                     {in.phi_q.select(1, 0), in.phi_k.select(1, 0)}, state),
                        "the numerator's features must be (B, H, P) = (2, 2, 5) as the state's, got [2, 2, 3]");
}

// Separable features (sineSPE's exact code on the features): psi = phi times coefficients shared by
// the batch; the fused op (float32, float64 on CPU) against the loops over psi materialised by hand.
TEST(PositionedLinearAttention, SeparableFeaturesMatchTheirMaterialisedFeatures) {
  PositionedInputs in = make_positioned_inputs(2, 7, 2, 3, 3, 4);
  const SeparableFeatures separable{at::randn({7, 2, 3, 4}, at::kDouble), at::randn({7, 2, 3, 4}, at::kDouble)};
  at::Tensor psi_q = at::empty({2, 7, 2, 12}, at::kDouble), psi_k = at::empty({2, 7, 2, 12}, at::kDouble);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t n = 0; n < 7; ++n)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t d = 0; d < 3; ++d)
          for (int64_t j = 0; j < 4; ++j) {
            psi_q[b][n][h][d * 4 + j] = in.phi_q[b][n][h][d].item<double>() * separable.query[n][h][d][j].item<double>();
            psi_k[b][n][h][d * 4 + j] = in.phi_k[b][n][h][d].item<double>() * separable.key[n][h][d][j].item<double>();
          }
  const PositionedFeatures materialised = positioned_features(in.phi_q, in.phi_k, separable);
  EXPECT_TRUE(at::allclose(materialised.query, psi_q, 0, 1e-14) && at::allclose(materialised.key, psi_k, 0, 1e-14));
  for (bool padded : {false, true}) {
    const at::Tensor padding = padded ? in.padding : at::Tensor();
    const at::Tensor expected = positioned_loops(in.phi_q, in.phi_k, psi_q, psi_k, in.v, padding, false);
    EXPECT_TRUE(at::allclose(separable_linear_attention(in.phi_q, in.phi_k, in.v, separable, padding), expected, 1e-10, 1e-12))
        << "padded " << padded;
    const at::Tensor causal = positioned_loops(in.phi_q, in.phi_k, psi_q, psi_k, in.v, padding, true);
    EXPECT_TRUE(at::allclose(causal_separable_linear_attention(in.phi_q, in.phi_k, in.v, separable, padding), causal,
                             1e-10, 1e-12))
        << "causal, padded " << padded;
  }
  const at::Tensor f32 = separable_linear_attention(in.phi_q.to(at::kFloat), in.phi_k.to(at::kFloat), in.v.to(at::kFloat),
                                          {separable.query.to(at::kFloat), separable.key.to(at::kFloat)}, in.padding);
  EXPECT_TRUE(at::allclose(f32.to(at::kDouble), positioned_loops(in.phi_q, in.phi_k, psi_q, psi_k, in.v, in.padding, false),
                           1e-4, 1e-5));
  EXPECT_ERROR_CONTAINS(separable_linear_attention(in.phi_q, in.phi_k, in.v, {separable.query.narrow(3, 0, 3), separable.key}),
                        "must be (N, H, M, J)");
  EXPECT_ERROR_CONTAINS(separable_linear_attention(in.phi_q, in.phi_k, in.v, {separable.query.to(at::kFloat), separable.key}),
                        "dtype and device of phi_q");
}

}  // namespace
}  // namespace spe
