#pragma once
// Finite-difference gradient checks in float64: autograd against central differences.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace spe::testing {

// Checks d loss / d x for every x in `inputs` (float64 leaves with requires_grad). `loss` must be
// deterministic (reseed every generator inside it).
inline void expect_gradients_match(const std::function<at::Tensor()>& loss,
                                   const std::vector<std::pair<std::string, at::Tensor>>& inputs,
                                   double step = 1e-6, double tolerance = 1e-5) {
  for (const auto& [name, x] : inputs) {
    ASSERT_EQ(x.scalar_type(), at::kDouble) << name;
    ASSERT_TRUE(x.requires_grad()) << name;
    if (x.grad().defined()) x.mutable_grad().zero_();
  }
  loss().backward();
  for (const auto& [name, x] : inputs) {
    ASSERT_TRUE(x.grad().defined()) << "no gradient reached " << name;
    at::Tensor analytic = x.grad().clone();
    at::Tensor numeric = at::zeros_like(analytic);
    at::Tensor flat = x.detach().view({-1});
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double saved = flat[i].item<double>();
      flat[i] = saved + step;
      const double up = loss().item<double>();
      flat[i] = saved - step;
      const double down = loss().item<double>();
      flat[i] = saved;
      numeric.view({-1})[i] = (up - down) / (2 * step);
    }
    const double scale = std::max(1.0, numeric.abs().max().item<double>());
    const double error = (analytic - numeric).abs().max().item<double>();
    EXPECT_LT(error, tolerance * scale) << "gradient of " << name << " differs from finite differences";
  }
}

}  // namespace spe::testing
