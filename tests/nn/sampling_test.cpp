// Next-token sampling: temperature and nucleus truncation against hand computations, banned and
// disallowed tokens, draws against the distribution (bounds from the binomial sd), and bad options.
#include "spe/nn/sampling.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "spe/random.h"
#include "support/errors.h"

namespace spe::nn {
namespace {

at::Tensor logits_of(const std::vector<double>& probabilities) {
  return at::log(at::tensor(probabilities, at::kDouble)).unsqueeze(0);
}

TEST(Sampling, TemperatureDividesTheLogits) {
  const at::Tensor logits = at::tensor({1.0, 2.0, -0.5}, at::kDouble).unsqueeze(0);
  SamplingOptions o;
  o.temperature = 0.5;
  const at::Tensor p = sampling_distribution(logits, o);
  const double z = std::exp(2.0) + std::exp(4.0) + std::exp(-1.0);
  EXPECT_NEAR(p[0][0].item<double>(), std::exp(2.0) / z, 1e-15);
  EXPECT_NEAR(p[0][1].item<double>(), std::exp(4.0) / z, 1e-15);
  EXPECT_NEAR(p[0][2].item<double>(), std::exp(-1.0) / z, 1e-15);
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingTheMass) {
  const at::Tensor logits = logits_of({0.15, 0.5, 0.05, 0.3});
  SamplingOptions o;
  o.top_p = 0.7;  // 0.5 + 0.3 reach it
  const at::Tensor p = sampling_distribution(logits, o);
  EXPECT_TRUE(at::allclose(p, at::tensor({0.0, 0.625, 0.0, 0.375}, at::kDouble).unsqueeze(0), 0, 1e-12)) << p;
  o.top_p = 0.85;  // needs the third
  EXPECT_TRUE(at::allclose(sampling_distribution(logits, o),
                           at::tensor({0.15, 0.5, 0.0, 0.3}, at::kDouble).unsqueeze(0) / 0.95, 0, 1e-12));
  o.top_p = 0.2;  // the most likely token alone
  EXPECT_TRUE(at::allclose(sampling_distribution(logits, o), at::tensor({0.0, 1.0, 0.0, 0.0}, at::kDouble).unsqueeze(0)));
}

TEST(Sampling, BannedTokensAreNeverDrawn) {
  const at::Tensor logits = logits_of({0.7, 0.1, 0.2});
  SamplingOptions o;
  o.banned = {0};
  const at::Tensor p = sampling_distribution(logits, o);
  EXPECT_EQ(p[0][0].item<double>(), 0.0);
  EXPECT_NEAR(p[0][1].item<double>(), 1.0 / 3.0, 1e-12);
  at::Generator g = make_generator(5);
  const at::Tensor draws = sample_tokens(logits.expand({500, 3}), o, g);
  EXPECT_FALSE((draws == 0).any().item<bool>());
}

TEST(Sampling, DisallowedTokensAreNeverDrawnAndTopPCountsOnlyTheRest) {
  const at::Tensor logits = logits_of({0.5, 0.3, 0.15, 0.05});
  SamplingOptions o;
  o.top_p = 0.8;
  const at::Tensor allowed = at::tensor({0, 1, 1, 1}, at::kLong).to(at::kBool);
  // Without token 0: 0.3, 0.15, 0.05 renormalised to 0.6, 0.3, 0.1; top-p 0.8 keeps 0.6 and 0.3.
  EXPECT_TRUE(at::allclose(sampling_distribution(logits, o, allowed),
                           at::tensor({0.0, 2.0 / 3.0, 1.0 / 3.0, 0.0}, at::kDouble).unsqueeze(0), 0, 1e-12));
  // One mask per row.
  const at::Tensor rows = at::stack({allowed, allowed.logical_not()});
  const at::Tensor p = sampling_distribution(logits.expand({2, 4}), SamplingOptions{}, rows);
  EXPECT_EQ(p[0][0].item<double>(), 0.0);
  EXPECT_EQ(p[1][0].item<double>(), 1.0);
  at::Generator g = make_generator(2);
  EXPECT_FALSE((sample_tokens(logits.expand({500, 4}), {}, g, allowed) == 0).any().item<bool>());
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, {}, at::ones({3}, at::kBool)),
                        "the allowed tokens are Bool of shape [3], expected bool of shape [4] or [1, 4]");
  o = {};
  o.banned = {1, 2, 3};
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, o, allowed), "row 0 has no token left to draw");
}

// n draws of category i: count ~ Binomial(n, p_i), checked within 5 sd of n p_i.
TEST(Sampling, DrawsFollowTheDistribution) {
  const std::vector<double> probabilities{0.4, 0.25, 0.2, 0.1, 0.05};
  const int64_t n = 20000;
  at::Generator g = make_generator(11);
  SamplingOptions o;
  o.top_p = 0.9;  // drops the 0.05 token: the others are renormalised by 0.95
  const at::Tensor draws = sample_tokens(logits_of(probabilities).expand({n, 5}), o, g);
  const at::Tensor counts = at::bincount(draws, {}, 5);
  for (int64_t i = 0; i < 5; ++i) {
    const double p = i == 4 ? 0.0 : probabilities[static_cast<size_t>(i)] / 0.95;
    const double sd = std::sqrt(n * p * (1.0 - p));
    EXPECT_LE(std::abs(counts[i].item<double>() - n * p), 5.0 * sd) << "token " << i;
  }
}

// TokenSampler (raw buffers, what generate and sample_tokens draw with) inverts exactly the
// distribution sampling_distribution gives: for uniform numbers u over [0, 1), the id whose
// cumulative probability first passes u, with temperature, top-p, a banned id and a mask at once;
// float32 and float64 logits, a strided row; and -1 when nothing is left.
TEST(TokenSampler, InvertsTheSamplingDistribution) {
  const int64_t v = 50;
  at::Generator g = make_generator(4);
  const at::Tensor logits = at::randn({v}, g, at::kDouble) * 2.0;
  const at::Tensor allowed = at::rand({v}, g, at::kDouble) > 0.3;
  SamplingOptions o;
  o.temperature = 0.7, o.top_p = 0.8, o.banned = {3, 17};
  const at::Tensor cumulative = sampling_distribution(logits.unsqueeze(0), o, allowed)[0].cumsum(0);
  const double* c = cumulative.data_ptr<double>();
  TokenSampler sampler(o);
  const at::Tensor strided = at::stack({logits, logits}, 1).select(1, 0);  // stride 2
  int checked = 0;
  for (double u = 0.0005; u < 1.0; u += 0.001) {
    int64_t expected = 0;
    while (c[expected] <= u) ++expected;
    if (std::abs(c[expected] - u) < 1e-9 || (expected > 0 && std::abs(c[expected - 1] - u) < 1e-9)) continue;
    ASSERT_EQ(sampler.draw(logits, allowed, u), expected) << "u = " << u;
    ASSERT_EQ(sampler.draw(strided, allowed, u), expected) << "u = " << u;
    ASSERT_EQ(sampler.draw(strided.unsqueeze(0), allowed, u), expected) << "u = " << u;  // a (1, V) row
    ++checked;
  }
  EXPECT_GT(checked, 990);
  // float32 logits: the same ids away from the boundaries (float32 rounding of the logits)
  const at::Tensor single = logits.to(at::kFloat);
  for (double u : {0.01, 0.3, 0.55, 0.9}) {
    int64_t expected = 0;
    while (c[expected] <= u) ++expected;
    EXPECT_EQ(sampler.draw(single, allowed, u), expected);
  }
  EXPECT_EQ(sampler.draw(logits, at::zeros({v}, at::kBool), 0.5), -1);
  EXPECT_ERROR_CONTAINS(sampler.draw(logits.clone().fill_(std::nan("")), allowed, 0.5), "NaN or infinity");
  EXPECT_ERROR_CONTAINS(sampler.draw(logits, allowed, 1.0), "u must lie in [0, 1)");
  EXPECT_ERROR_CONTAINS(sampler.draw(at::stack({logits, logits}), allowed, 0.5), "(V) or (1, V)");
  EXPECT_ERROR_CONTAINS(sampler.draw(logits.narrow(0, 0, 10), {}, 0.5), "banned token 17 is not in [0, 10)");
}

TEST(Sampling, RefusesBadOptions) {
  const at::Tensor logits = at::zeros({1, 4}, at::kDouble);
  SamplingOptions o;
  o.temperature = 0.0;
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, o), "temperature is 0");
  o = {};
  o.top_p = 1.5;
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, o), "top_p is 1.5");
  o = {};
  o.banned = {4};
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, o), "banned token 4");
  o.banned = {0, 1, 2, 3};
  EXPECT_ERROR_CONTAINS(sampling_distribution(logits, o), "every token is banned");
  o = {};
  EXPECT_ERROR_CONTAINS(sampling_distribution(at::full({1, 3}, NAN, at::kDouble), o), "NaN");
}

}  // namespace
}  // namespace spe::nn
