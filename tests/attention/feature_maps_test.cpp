// Feature maps: elu+1, ReLU and FAVOR+ (statistics with bounds from the number of draws).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "spe/attention/feature_maps.h"
#include "spe/attention/linear.h"
#include "support/errors.h"

namespace spe {
namespace {

TEST(FeatureMap, EluAndRelu) {
  at::Tensor x = at::randn({2, 3, 4}, at::kDouble);
  FeatureMap elu(FeatureMapOptions(FeatureMapKind::elu, 4));
  FeatureMap relu(FeatureMapOptions(FeatureMapKind::relu, 4));
  at::Tensor e = elu->forward(x, FeatureRole::query), r = relu->forward(x, FeatureRole::key);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.view({-1})[i].item<double>();
    EXPECT_NEAR(e.view({-1})[i].item<double>(), v > 0 ? v + 1 : std::exp(v), 1e-15);
    EXPECT_EQ(r.view({-1})[i].item<double>(), std::max(v, 0.0));
  }
  EXPECT_EQ(elu->features(), 4);
}

TEST(FeatureMap, OrthogonalRandomFeatures) {
  const int64_t D = 8, M = 3 * D;
  at::Tensor w = orthogonal_random_features(M, D, at::kDouble, make_generator(1));
  ASSERT_EQ(w.sizes(), at::IntArrayRef({M, D}));
  for (int64_t block = 0; block < 3; ++block) {
    at::Tensor rows = w.narrow(0, block * D, D);
    at::Tensor gram = at::mm(rows, rows.t());
    at::Tensor off_diagonal = gram - at::diag_embed(at::diagonal(gram));
    EXPECT_LT(off_diagonal.abs().max().item<double>(), 1e-10);
  }
  // squared row norms are chi^2_D: mean D, variance 2D; n rows over many draws
  at::Tensor norms = orthogonal_random_features(4000, D, at::kDouble, make_generator(2)).pow(2).sum(1);
  EXPECT_NEAR(norms.mean().item<double>(), D, 5 * std::sqrt(2.0 * D / 4000));
}

// One FAVOR+ estimate of exp(q . k) per draw of the random features.
at::Tensor favor_estimates(const at::Tensor& q, const at::Tensor& k, int64_t features, int draws, uint64_t seed) {
  std::vector<at::Tensor> out;
  auto generator = make_generator(seed);
  const at::Tensor no_shift = at::zeros({}, at::kDouble);
  for (int t = 0; t < draws; ++t) {
    at::Tensor w = orthogonal_random_features(features, q.size(0), at::kDouble, generator);
    out.push_back((favor_features(q, w, no_shift) * favor_features(k, w, no_shift)).sum());
  }
  return at::stack(out);
}

TEST(FeatureMap, FavorEstimatesExpOfDotProductWithoutBias) {
  const int64_t D = 6;
  at::manual_seed(3);
  at::Tensor q = at::randn({D}, at::kDouble) * 0.4, k = at::randn({D}, at::kDouble) * 0.4;
  const double exact = std::exp(q.dot(k).item<double>());
  const int draws = 4000;
  at::Tensor estimates = favor_estimates(q, k, D, draws, 10);
  const double standard_error = estimates.std().item<double>() / std::sqrt(double(draws));
  EXPECT_LT(std::abs(estimates.mean().item<double>() - exact), 5 * standard_error);
}

TEST(FeatureMap, FavorErrorShrinksWithTheNumberOfFeatures) {
  // Blocks of D features are i.i.d., so the mean squared error with 16 blocks is 1/16 of one's.
  const int64_t D = 6;
  const int draws = 3000;
  at::manual_seed(4);
  at::Tensor q = at::randn({D}, at::kDouble) * 0.4, k = at::randn({D}, at::kDouble) * 0.4;
  const double exact = std::exp(q.dot(k).item<double>());
  at::Tensor small = (favor_estimates(q, k, D, draws, 20) - exact).pow(2);
  at::Tensor large = (favor_estimates(q, k, 16 * D, draws, 30) - exact).pow(2);
  const double mse_small = small.mean().item<double>(), mse_large = large.mean().item<double>();
  const double se = std::sqrt(small.var().item<double>() / draws + 256 * large.var().item<double>() / draws);
  EXPECT_LT(std::abs(mse_small - 16 * mse_large), 5 * se)
      << "MSE with M = D: " << mse_small << ", with M = 16 D: " << mse_large;
}

TEST(FeatureMap, FavorStabilisationCancelsInTheAttention) {
  const int64_t B = 2, N = 5, H = 2, D = 4, M = 8;
  at::manual_seed(6);
  FeatureMap favor(FeatureMapOptions(FeatureMapKind::favor, D).features(M));
  favor->to(at::kDouble);
  at::Tensor q = at::randn({B, N, H, D}, at::kDouble), k = at::randn({B, N, H, D}, at::kDouble),
             v = at::randn({B, N, H, 3}, at::kDouble);
  // unstabilised features of the scaled inputs, as in the definition
  const at::Tensor none = at::zeros({}, at::kDouble);
  const double scale = std::pow(D, 0.25);
  at::Tensor plain_q = favor_features(q / scale, favor->projection, none);
  at::Tensor plain_k = favor_features(k / scale, favor->projection, none);
  at::Tensor stable_q = favor->forward(q, FeatureRole::query), stable_k = favor->forward(k, FeatureRole::key);
  EXPECT_TRUE(at::allclose(causal_linear_attention(stable_q, stable_k, v), causal_linear_attention(plain_q, plain_k, v), 1e-9, 1e-12));
  EXPECT_TRUE(at::allclose(linear_attention(stable_q, stable_k, v), linear_attention(plain_q, plain_k, v), 1e-9, 1e-12));
  // huge inputs in float32 stay finite
  FeatureMap single(FeatureMapOptions(FeatureMapKind::favor, D).features(M));
  at::Tensor big = at::randn({B, N, H, D}) * 60;
  EXPECT_TRUE(at::isfinite(single->forward(big, FeatureRole::query)).all().item<bool>());
  EXPECT_TRUE(at::isfinite(single->forward(big, FeatureRole::key)).all().item<bool>());
  EXPECT_LE(single->forward(big, FeatureRole::key).max().item<double>(), 1.0);
}

TEST(FeatureMap, RedrawExplicitAndEveryNSteps) {
  FeatureMap favor(FeatureMapOptions(FeatureMapKind::favor, 4).features(8).redraw_interval(3));
  at::Tensor first = favor->projection.clone();
  EXPECT_FALSE(favor->after_training_step(1));
  EXPECT_FALSE(favor->after_training_step(2));
  EXPECT_TRUE(at::equal(favor->projection, first));
  EXPECT_TRUE(favor->after_training_step(3));
  EXPECT_FALSE(at::equal(favor->projection, first));
  at::Tensor third = favor->projection.clone();
  EXPECT_FALSE(favor->after_training_step(7));  // a resumed run: multiples of 3 only
  EXPECT_TRUE(at::equal(favor->projection, third));
  EXPECT_TRUE(favor->after_training_step(9));
  favor->redraw(make_generator(5));
  at::Tensor seeded = favor->projection.clone();
  favor->redraw(make_generator(5));
  EXPECT_TRUE(at::equal(favor->projection, seeded));
  EXPECT_TRUE(favor->buffers().size() == 1 && favor->parameters().empty());
  FeatureMap never(FeatureMapOptions(FeatureMapKind::favor, 4));
  for (int i = 1; i <= 5; ++i) EXPECT_FALSE(never->after_training_step(i));
}

TEST(FeatureMap, BadArgumentsAreNamed) {
  EXPECT_ERROR_CONTAINS(parse_choice("feature map", "softplus", kFeatureMapKinds), "feature map: 'softplus' is not one of: elu, relu, favor");
  EXPECT_ERROR_CONTAINS(FeatureMap(FeatureMapOptions(FeatureMapKind::relu, 4).features(8)), "relu has M = D = 4 features, got features = 8");
  EXPECT_ERROR_CONTAINS(FeatureMap(FeatureMapOptions(FeatureMapKind::favor, 4).features(-1)), "features (M) must be positive");
  EXPECT_ERROR_CONTAINS(FeatureMap(FeatureMapOptions(FeatureMapKind::favor, 4).redraw_interval(-2)), "redraw_interval must be >= 0");
  FeatureMap favor(FeatureMapOptions(FeatureMapKind::favor, 4));
  EXPECT_ERROR_CONTAINS(favor->forward(at::randn({2, 5}), FeatureRole::query), "input must be (..., 4), got shape [2, 5]");
}

}  // namespace
}  // namespace spe
