// Shaw's clipped relative positions, fused (per-distance values spread over the keys, and per-key
// values summed per distance): against explicit float64 loops over lengths with and without
// clipping, queries fewer and more than the keys, rows split across tasks; each the other's
// adjoint; their backwards against finite differences; float32 at an image model's size; errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <vector>

#include "spe/ops/relative_buckets.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

// The bucket of key j for query i, written from the definition: query i at i + Nk - Nq.
int64_t bucket(int64_t i, int64_t j, int64_t Nq, int64_t Nk, int64_t clip) {
  return std::clamp<int64_t>(j - (i + Nk - Nq), -clip, clip) + clip;
}

// per_bucket (M, Nq, 2k + 1) -> (M, Nq, Nk), one entry at a time.
at::Tensor expand_loops(const at::Tensor& per_bucket, int64_t Nk) {
  const int64_t M = per_bucket.size(0), Nq = per_bucket.size(1), clip = (per_bucket.size(2) - 1) / 2;
  auto p = per_bucket.accessor<double, 3>();
  at::Tensor out = at::zeros({M, Nq, Nk}, at::kDouble);
  auto o = out.accessor<double, 3>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < Nq; ++i)
      for (int64_t j = 0; j < Nk; ++j) o[m][i][j] = p[m][i][bucket(i, j, Nq, Nk, clip)];
  return out;
}

// per_key (M, Nq, Nk) -> (M, Nq, 2k + 1), one key at a time.
at::Tensor sum_loops(const at::Tensor& per_key, int64_t clip) {
  const int64_t M = per_key.size(0), Nq = per_key.size(1), Nk = per_key.size(2);
  auto x = per_key.accessor<double, 3>();
  at::Tensor out = at::zeros({M, Nq, 2 * clip + 1}, at::kDouble);
  auto o = out.accessor<double, 3>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < Nq; ++i)
      for (int64_t j = 0; j < Nk; ++j) o[m][i][bucket(i, j, Nq, Nk, clip)] += x[m][i][j];
  return out;
}

// {M, Nq, Nk, k}: clipped on both sides, k beyond the length (nothing clipped), one bucket, fewer
// queries than keys (decoding with a cache), more queries than keys (some query past every key by
// more than k), a single query, 130 rows of one query (three tasks of 64 rows)
const std::vector<std::array<int64_t, 4>> kCases{{2, 9, 9, 2},  {3, 4, 4, 10}, {2, 6, 6, 0}, {2, 3, 8, 2},
                                                 {2, 8, 3, 1},  {1, 1, 5, 3},  {130, 1, 7, 2}};

TEST(FusedRelativeBuckets, ExpandMatchesTheLoops) {
  auto g = make_generator(21);
  for (const auto& [M, Nq, Nk, clip] : kCases) {
    const at::Tensor per_bucket = at::randn({M, Nq, 2 * clip + 1}, g, at::kDouble);
    EXPECT_TRUE(at::equal(ops::expand_relative_buckets(per_bucket, Nk), expand_loops(per_bucket, Nk)))
        << "M " << M << " Nq " << Nq << " Nk " << Nk << " k " << clip;
  }
}

TEST(FusedRelativeBuckets, SumMatchesTheLoops) {
  auto g = make_generator(22);
  for (const auto& [M, Nq, Nk, clip] : kCases) {
    const at::Tensor per_key = at::randn({M, Nq, Nk}, g, at::kDouble);
    EXPECT_LT(testing::relative_error(ops::sum_relative_buckets(per_key, clip), sum_loops(per_key, clip)), 1e-14)
        << "M " << M << " Nq " << Nq << " Nk " << Nk << " k " << clip;
  }
}

TEST(FusedRelativeBuckets, EachIsTheOthersAdjoint) {
  // <expand(P), X> = <P, sum(X)> for the leading dimensions of attention weights (B, H, Nq, Nk)
  auto g = make_generator(23);
  const at::Tensor P = at::randn({2, 3, 11, 9}, g, at::kDouble), X = at::randn({2, 3, 11, 14}, g, at::kDouble);
  const double left = (ops::expand_relative_buckets(P, 14) * X).sum().item<double>();
  const double right = (P * ops::sum_relative_buckets(X, 4)).sum().item<double>();
  EXPECT_NEAR(left, right, 1e-12 * std::max(1.0, std::abs(left)));
}

TEST(FusedRelativeBuckets, BackwardsMatchFiniteDifferences) {
  auto g = make_generator(24);
  at::Tensor per_bucket = at::randn({2, 5, 5}, g, at::kDouble).requires_grad_();
  const at::Tensor key_weights = at::randn({2, 5, 7}, g, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::expand_relative_buckets(per_bucket, 7) * key_weights).sum(); },
                                  {{"per_bucket", per_bucket}});
  at::Tensor per_key = at::randn({2, 6, 4}, g, at::kDouble).requires_grad_();
  const at::Tensor bucket_weights = at::randn({2, 6, 3}, g, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::sum_relative_buckets(per_key, 1) * bucket_weights).sum(); },
                                  {{"per_key", per_key}});
}

TEST(FusedRelativeBuckets, Float32AtAnImageModelsSize) {
  // H 4 of a Fashion-MNIST classifier's 785 positions, k 32
  auto g = make_generator(25);
  const at::Tensor per_bucket = at::randn({1, 4, 785, 65}, g, at::kFloat), per_key = at::rand({1, 4, 785, 785}, g, at::kFloat);
  EXPECT_TRUE(at::equal(ops::expand_relative_buckets(per_bucket, 785).to(at::kDouble),
                        expand_loops(per_bucket.to(at::kDouble).flatten(0, 1), 785).view({1, 4, 785, 785})));
  EXPECT_LT(testing::relative_error(ops::sum_relative_buckets(per_key, 32),
                                    sum_loops(per_key.to(at::kDouble).flatten(0, 1), 32).view({1, 4, 785, 65})),
            1e-5);
}

TEST(FusedRelativeBuckets, BadInputsAreClearErrors) {
  const at::Tensor x = at::randn({2, 3, 5}, at::kDouble);
  EXPECT_ERROR_CONTAINS(ops::expand_relative_buckets(x.flatten(), 4), "expected per_bucket (..., Nq, 2k + 1), got shape [30]");
  EXPECT_ERROR_CONTAINS(ops::expand_relative_buckets(x.narrow(2, 0, 4), 4), "must be 2k + 1 (odd), got [2, 3, 4]");
  EXPECT_ERROR_CONTAINS(ops::expand_relative_buckets(x, -1), "key_length must be >= 0, got -1");
  EXPECT_ERROR_CONTAINS(ops::sum_relative_buckets(x, -2), "clip must be >= 0, got -2");
  EXPECT_ERROR_CONTAINS(ops::sum_relative_buckets(x.flatten(), 1), "expected per_key (..., Nq, Nk), got shape [30]");
  EXPECT_ERROR_CONTAINS(ops::sum_relative_buckets(x.to(at::kLong), 1), "float32 or float64");
}

}  // namespace
}  // namespace spe
