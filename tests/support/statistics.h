#pragma once
// Statistical checks with bounds derived from the number of samples.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace spe::testing {

// `z` holds independent standardised errors (estimate - exact mean) / exact standard deviation,
// each the sum of `terms` i.i.d. products of two jointly Gaussian variables. Then E[z] = 0,
// E[z^2] = 1, and Var(z^2) = 2 + kappa / terms, where kappa, the excess kurtosis of one product,
// is at most 12 (reached by X * X). Both sample means must lie within `sigmas` standard errors.
inline void expect_standardised(const std::vector<double>& z, double terms, double sigmas = 5.0) {
  const double n = static_cast<double>(z.size());
  double sum = 0, sum_sq = 0;
  for (double v : z) {
    sum += v;
    sum_sq += v * v;
  }
  const double mean = sum / n, mean_sq = sum_sq / n;
  EXPECT_LT(std::abs(mean), sigmas / std::sqrt(n)) << "biased: mean standardised error " << mean;
  const double sd_of_mean_sq = std::sqrt((2.0 + 12.0 / terms) / n);
  EXPECT_LT(std::abs(mean_sq - 1.0), sigmas * sd_of_mean_sq)
      << "spread: mean squared standardised error " << mean_sq << " over " << n << " samples";
}

}  // namespace spe::testing
