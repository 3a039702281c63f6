// The fused causal linear attention with a per-head decay g_h^(m - n) (the same chunked kernel as
// the plain op, given log_decay) against the pair-at-a-time loops, against the ATen chunked
// product (forward and every gradient, log_decay's included), at g = 1 against the plain op, at
// long N with a small g, and by finite differences in float64; its sums before the division
// (decayed_causal_linear_sums) likewise.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "spe/attention/linear.h"
#include "spe/ops/causal_linear_attention.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"
#include "support/weighted_attention.h"

namespace spe {
namespace {

struct DecayedInputs {
  at::Tensor q, k, v, log_decay;  // (B, N, H, M), (B, N, H, M), (B, N, H, Dv), (H,)
};

// Positive features (every denominator well above eps), decays spread over [g_low, g_high].
DecayedInputs decayed_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t Dv, at::ScalarType dtype,
                      double g_low = 0.5, double g_high = 0.95) {
  auto g = make_generator(11);
  return {at::rand({B, N, H, M}, g, dtype) + 0.1, at::rand({B, N, H, M}, g, dtype) + 0.1,
          at::randn({B, N, H, Dv}, g, dtype), at::log(at::linspace(g_low, g_high, H, dtype))};
}

// The ATen chunked scan of linear.h: decayed numerator and normaliser, then the division.
at::Tensor aten_decayed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_decay,
                        double eps) {
  const at::Tensor values = at::cat({v, at::ones_like(v.narrow(3, 0, 1))}, 3);  // (B, N, H, Dv + 1)
  const at::Tensor sums = decayed_causal_product(q, k, values, log_decay);
  const int64_t dv = v.size(3);
  return sums.narrow(3, 0, dv) / sums.narrow(3, dv, 1).clamp_min(eps);
}

// (q, k, v, log_decay) -> out, on fresh leaves that require gradients.
using Attention = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>;

// out and the gradients of (out * g).sum() with respect to q, k, v and log_decay (undefined when
// the attention does not read it).
std::vector<at::Tensor> output_and_gradients(const Attention& attention, const DecayedInputs& x, const at::Tensor& g) {
  at::Tensor q = x.q.clone().requires_grad_(), k = x.k.clone().requires_grad_(), v = x.v.clone().requires_grad_(),
             log_decay = x.log_decay.clone().requires_grad_();
  const at::Tensor out = attention(q, k, v, log_decay);
  (out * g).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad(), log_decay.grad()};
}

TEST(FusedDecayedCausalLinearAttention, MatchesThePairLoopsForEveryChunking) {
  DecayedInputs x = decayed_inputs(2, 11, 3, 4, 5, at::kDouble);
  x.log_decay[2] = 0.0;  // one head without decay
  auto weight = [&](int64_t b, int64_t h, int64_t m, int64_t n) {
    return std::exp(x.log_decay[h].item<double>() * static_cast<double>(m - n)) *
           testing::pair_dot(x.q, x.k, b, h, m, n);
  };
  const at::Tensor expected = testing::pairwise_linear_loops(x.v, at::Tensor(), /*causal=*/true, weight, weight);
  for (int64_t chunk : {1, 3, 4, 11, 64}) {  // chunks that do not divide N, and N < chunk
    const at::Tensor got = ops::decayed_causal_linear_attention(x.q, x.k, x.v, x.log_decay, 1e-6, chunk);
    EXPECT_LT((got - expected).abs().max().item<double>(), 1e-12) << "chunk " << chunk;
  }
  DecayedInputs f = decayed_inputs(2, 37, 2, 8, 6, at::kFloat);
  const at::Tensor got = ops::decayed_causal_linear_attention(f.q, f.k, f.v, f.log_decay, 1e-6, 8);
  const at::Tensor want = aten_decayed(f.q.to(at::kDouble), f.k.to(at::kDouble), f.v.to(at::kDouble),
                                       f.log_decay.to(at::kDouble), 1e-6);
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), want, 1e-4, 1e-6));
}

// Forward and the gradients of all four inputs against autograd through the ATen scan, at the
// sizes of real models (the kernel's vector paths) and with a partial last chunk.
TEST(FusedDecayedCausalLinearAttention, MatchesTheAtenScanForwardAndBackward) {
  for (int64_t value_dim : {64, 40}) {
    for (int64_t chunk : {64, 48}) {
      const DecayedInputs x = decayed_inputs(2, 150, 2, 64, value_dim, at::kDouble, 0.7, 0.99);
      const at::Tensor g = at::randn({2, 150, 2, value_dim}, at::kDouble);
      const auto fused = output_and_gradients(
          [chunk](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_decay) {
            return ops::decayed_causal_linear_attention(q, k, v, log_decay, 1e-6, chunk);
          },
          x, g);
      const auto reference = output_and_gradients(
          [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_decay) {
            return aten_decayed(q, k, v, log_decay, 1e-6);
          },
          x, g);
      for (int i = 0; i < 5; ++i)
        EXPECT_LT(testing::relative_error(fused[i], reference[i]), 1e-10)
            << "output/grads q, k, v, log_decay: " << i << ", value dim " << value_dim << ", chunk " << chunk;
    }
  }
}

TEST(FusedDecayedCausalLinearAttention, NoDecayIsThePlainOp) {
  DecayedInputs x = decayed_inputs(2, 70, 3, 16, 8, at::kDouble);
  x.log_decay.zero_();
  const at::Tensor g = at::randn({2, 70, 3, 8}, at::kDouble);
  const auto decayed = output_and_gradients(
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& log_decay) {
        return ops::decayed_causal_linear_attention(q, k, v, log_decay, 1e-6, 16);
      },
      x, g);
  const auto plain = output_and_gradients(
      [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor&) {
        return ops::causal_linear_attention(q, k, v, 1e-6, 16);
      },
      x, g);
  for (int i = 0; i < 4; ++i) EXPECT_LT(testing::relative_error(decayed[i], plain[i]), 1e-12) << "output/grads " << i;
}

// No g^(-n) anywhere: at N = 20000 with g = 0.5 (g^-N overflows any float) every value is finite
// and equals the scan; the gradient of log g too.
TEST(FusedDecayedCausalLinearAttention, LongSequencesWithSmallDecaysStayFinite) {
  DecayedInputs x = decayed_inputs(1, 20000, 2, 8, 4, at::kFloat, 0.5, 0.999);
  at::Tensor q = x.q.requires_grad_(), k = x.k.requires_grad_(), v = x.v.requires_grad_();
  at::Tensor log_decay = x.log_decay.requires_grad_();
  const at::Tensor out = ops::decayed_causal_linear_attention(q, k, v, log_decay);
  ASSERT_TRUE(at::isfinite(out).all().item<bool>());
  const at::Tensor want = aten_decayed(q.detach().to(at::kDouble), k.detach().to(at::kDouble),
                                       v.detach().to(at::kDouble), log_decay.detach().to(at::kDouble), 1e-6);
  EXPECT_LT(testing::relative_error(out.detach(), want), 1e-4);
  out.pow(2).mean().backward();
  for (const at::Tensor* t : {&q, &k, &v, &log_decay})
    EXPECT_TRUE(at::isfinite(t->grad()).all().item<bool>());
  // d loss / d log g sums position-weighted dot products over N (the kernel's identity, in float64
  // sums): float32 stays close to float64 at this N.
  at::Tensor log_decay64 = log_decay.detach().to(at::kDouble).requires_grad_();
  ops::decayed_causal_linear_attention(q.detach().to(at::kDouble), k.detach().to(at::kDouble),
                                       v.detach().to(at::kDouble), log_decay64)
      .pow(2)
      .mean()
      .backward();
  const at::Tensor want64 = log_decay64.grad();
  EXPECT_LT(((log_decay.grad().to(at::kDouble) - want64).abs() / want64.abs()).max().item<double>(), 1e-3)
      << log_decay.grad() << " against float64 " << want64;
}

TEST(FusedDecayedCausalLinearAttention, GradientCheckIncludingTheDecay) {
  for (int64_t chunk : {3, 16}) {
    const DecayedInputs x = decayed_inputs(2, 7, 2, 3, 2, at::kDouble, 0.6, 0.9);
    at::Tensor q = x.q.requires_grad_(), k = x.k.requires_grad_(), v = x.v.requires_grad_();
    at::Tensor log_decay = x.log_decay.requires_grad_();
    const at::Tensor w = at::randn({2, 7, 2, 2}, at::kDouble);
    testing::expect_gradients_match(
        [&] { return (ops::decayed_causal_linear_attention(q, k, v, log_decay, 1e-6, chunk) * w).sum(); },
        {{"phi_q", q}, {"phi_k", k}, {"v", v}, {"log_decay", log_decay}});
  }
}

// The sums before the division against the ATen scan's numerator and normaliser, forward and the
// gradients through both outputs (the kernel's raw mode: gn, gd given instead of derived), over
// chunkings with partial last chunks; features of both signs (no normaliser is clamped here).
TEST(DecayedCausalLinearSums, MatchTheAtenScanForwardAndBackward) {
  for (int64_t chunk : {4, 32}) {
    DecayedInputs x = decayed_inputs(2, 75, 3, 16, 40, at::kDouble, 0.6, 0.99);
    x.q = x.q - 0.4;
    const at::Tensor g_num = at::randn({2, 75, 3, 40}, at::kDouble), g_den = at::randn({2, 75, 3}, at::kDouble);
    auto run = [&](bool fused) {
      at::Tensor q = x.q.clone().requires_grad_(), k = x.k.clone().requires_grad_(), v = x.v.clone().requires_grad_(),
                 log_decay = x.log_decay.clone().requires_grad_();
      at::Tensor num, den;
      if (fused) {
        std::tie(num, den) = ops::decayed_causal_linear_sums(q, k, v, log_decay, chunk);
      } else {
        const at::Tensor sums = decayed_causal_product(q, k, at::cat({v, at::ones_like(v.narrow(3, 0, 1))}, 3), log_decay);
        num = sums.narrow(3, 0, 40), den = sums.select(3, 40);
      }
      ((num * g_num).sum() + (den * g_den).sum()).backward();
      return std::vector<at::Tensor>{num.detach(), den.detach(), q.grad(), k.grad(), v.grad(), log_decay.grad()};
    };
    const auto fused = run(true), reference = run(false);
    for (int i = 0; i < 6; ++i)
      EXPECT_LT(testing::relative_error(fused[i], reference[i]), 1e-10)
          << "num, den, grads q, k, v, log_decay: " << i << ", chunk " << chunk;
  }
}

// One output reaching the loss: the other's gradient is undefined and reads as zero.
TEST(DecayedCausalLinearSums, GradientCheckThroughEitherOutput) {
  const DecayedInputs x = decayed_inputs(1, 9, 2, 3, 2, at::kDouble, 0.6, 0.9);
  at::Tensor q = x.q.requires_grad_(), k = x.k.requires_grad_(), v = x.v.requires_grad_();
  at::Tensor log_decay = x.log_decay.requires_grad_();
  const at::Tensor w = at::randn({1, 9, 2, 2}, at::kDouble), u = at::randn({1, 9, 2}, at::kDouble);
  const std::vector<std::pair<std::string, at::Tensor>> inputs{
      {"phi_q", q}, {"phi_k", k}, {"v", v}, {"log_decay", log_decay}};
  testing::expect_gradients_match(
      [&] { return (std::get<0>(ops::decayed_causal_linear_sums(q, k, v, log_decay, 4)) * w).sum(); }, inputs);
  testing::expect_gradients_match(
      [&] { return (std::get<1>(ops::decayed_causal_linear_sums(q, k, v, log_decay, 4)) * u).sum(); },
      {{"phi_q", q}, {"phi_k", k}, {"log_decay", log_decay}});
}

TEST(FusedDecayedCausalLinearAttention, BadInputIsNamed) {
  const at::Tensor x = at::rand({2, 5, 2, 3});
  const at::Tensor log_decay = at::full({2}, -0.1);
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_attention(x, x, x, log_decay.narrow(0, 0, 1)),
                        "log_decay must be (H,) with H = 2, got [1]");
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_attention(x, x, x, log_decay.to(at::kDouble)),
                        "log_decay must be on CPU in the inputs' dtype Float, got Double");
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_attention(x, x, x, -log_decay), "log_decay must be <= 0");
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_attention(x, x, x, log_decay, 1e-6, 0),
                        "chunk must be in [1, 4096], got 0");
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_sums(x, x, x, -log_decay), "decayed_causal_linear_sums: log_decay must be <= 0");
  EXPECT_ERROR_CONTAINS(ops::decayed_causal_linear_sums(x, x.narrow(1, 0, 4), x, log_decay), "must have the same shape");
}

}  // namespace
}  // namespace spe
