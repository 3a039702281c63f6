// The fused chunked causal linear attention against the quadratic formula, over chunk sizes
// that split the sequence into full and partial chunks, forward and backward.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "spe/ops/causal_linear_attention.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

// out_m = sum_{n <= m} (q_m . k_n) v_n / max(sum_{n <= m} q_m . k_n, eps), as (B, H, N, N) products.
at::Tensor quadratic(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double eps) {
  at::Tensor s = at::einsum("bmhf,bnhf->bhmn", {q, k}).tril();
  return at::einsum("bhmn,bnhd->bmhd", {s, v}) / s.sum(-1).transpose(1, 2).clamp_min(eps).unsqueeze(-1);
}

struct CausalInputs {
  at::Tensor q, k, v;
};
CausalInputs positive_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t Dv, at::ScalarType dtype) {
  auto g = make_generator(3);
  return {at::rand({B, N, H, M}, g, dtype), at::rand({B, N, H, M}, g, dtype), at::randn({B, N, H, Dv}, g, dtype)};
}

TEST(FusedCausalLinearAttention, MatchesTheQuadraticFormForEveryChunking) {
  CausalInputs x = positive_inputs(2, 11, 3, 4, 5, at::kDouble);
  at::Tensor expected = quadratic(x.q, x.k, x.v, 1e-6);
  for (int64_t chunk : {1, 3, 4, 11, 64}) {
    at::Tensor got = ops::causal_linear_attention(x.q, x.k, x.v, 1e-6, chunk);
    EXPECT_LT((got - expected).abs().max().item<double>(), 1e-10) << "chunk " << chunk;
  }
  CausalInputs f = positive_inputs(2, 37, 2, 8, 6, at::kFloat);
  at::Tensor got = ops::causal_linear_attention(f.q, f.k, f.v, 1e-6, 8);
  at::Tensor want = quadratic(f.q.to(at::kDouble), f.k.to(at::kDouble), f.v.to(at::kDouble), 1e-6);
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), want, 1e-4, 1e-6));
}

TEST(FusedCausalLinearAttention, BackwardMatchesAutogradOfTheQuadraticForm) {
  for (int64_t chunk : {1, 3, 64}) {
    CausalInputs x = positive_inputs(2, 10, 2, 3, 4, at::kDouble);
    // ReLU-like zeros: some queries see a zero denominator, which the clamp must handle
    x.q.select(1, 0).zero_();
    at::Tensor g = at::randn({2, 10, 2, 4}, at::kDouble);
    std::vector<at::Tensor> fused, reference;
    for (auto* grads : {&fused, &reference}) {
      at::Tensor q = x.q.clone().requires_grad_(), k = x.k.clone().requires_grad_(), v = x.v.clone().requires_grad_();
      at::Tensor out = grads == &fused ? ops::causal_linear_attention(q, k, v, 1e-6, chunk) : quadratic(q, k, v, 1e-6);
      (out * g).sum().backward();
      *grads = {q.grad(), k.grad(), v.grad()};
    }
    // Relative to the gradient's size: the clamped denominators make some entries about 1e6.
    for (int i = 0; i < 3; ++i)
      EXPECT_LT(testing::relative_error(fused[i], reference[i]), 1e-10)
          << "input " << i << " chunk " << chunk << ", largest entry " << reference[i].abs().max().item<double>();
  }
}

// At the sizes of real models the chunk products take the register-blocked vector paths of the
// kernel (the tests above, with a few features, mostly take their scalar tails).
TEST(FusedCausalLinearAttention, MatchesAutogradAtModelSizes) {
  for (int64_t value_dim : {64, 40}) {  // 40: vector blocks of 32 or 16 and a scalar tail
    CausalInputs x = positive_inputs(1, 150, 2, 64, value_dim, at::kDouble);
    at::Tensor g = at::randn({1, 150, 2, value_dim}, at::kDouble);
    std::vector<at::Tensor> fused, reference;
    for (auto* grads : {&fused, &reference}) {
      at::Tensor q = x.q.clone().requires_grad_(), k = x.k.clone().requires_grad_(), v = x.v.clone().requires_grad_();
      at::Tensor out = grads == &fused ? ops::causal_linear_attention(q, k, v, 1e-6, 64) : quadratic(q, k, v, 1e-6);
      (out * g).sum().backward();
      *grads = {out.detach(), q.grad(), k.grad(), v.grad()};
    }
    for (int i = 0; i < 4; ++i)
      EXPECT_LT(testing::relative_error(fused[i], reference[i]), 1e-10)
          << "output/grads " << i << ", value dim " << value_dim;
  }
}

TEST(FusedCausalLinearAttention, GradientCheck) {
  CausalInputs x = positive_inputs(1, 7, 2, 3, 2, at::kDouble);
  at::Tensor q = x.q.requires_grad_(), k = x.k.requires_grad_(), v = x.v.requires_grad_();
  at::Tensor w = at::randn({1, 7, 2, 2}, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::causal_linear_attention(q, k, v, 1e-6, 3) * w).sum(); },
                                  {{"phi_q", q}, {"phi_k", k}, {"v", v}});
}

TEST(FusedCausalLinearAttention, BadInputIsNamed) {
  at::Tensor x = at::rand({2, 5, 2, 3});
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x, x, x.to(at::kDouble)), "inputs must share a dtype");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x.to(at::kHalf), x.to(at::kHalf), x.to(at::kHalf)), "float32 or float64 expected, got Half");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x, at::rand({2, 5, 2, 4}), x), "must have the same shape");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x, x, at::rand({2, 4, 2, 3})), "must agree with phi_q");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x, x, x, 1e-6, 0), "chunk must be in [1, 4096], got 0");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x, x, x, -1.0), "eps must be positive, got -1");
  EXPECT_ERROR_CONTAINS(ops::causal_linear_attention(x[0], x, x), "inputs must be (B, N, H, M)");
}

}  // namespace
}  // namespace spe
