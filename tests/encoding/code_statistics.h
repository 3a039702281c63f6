#pragma once
// The sampling distribution of SPE codes: for one pair of positions (m, n) and each (h, d),
// S = sum_r Qbar[m,h,d,r] Kbar[n,h,d,r] with Qbar = X / (R D)^(1/4), Kbar = Y / (R D)^(1/4),
// (X, Y) jointly Gaussian, i.i.d. over r, Var X = var_q, Var Y = var_k, Cov = cov. Hence
//   E[S] = R cov / sqrt(R D),   Var S = (var_q var_k + cov^2) / D.
#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "spe/encoding/spe_code.h"
#include "support/statistics.h"

namespace spe::testing {

// Draws `draws` codes (each from its own generator seed) and checks the standardised errors of
// S over all (h, d) and draws. var_q, var_k, cov: (H, D), float64.
inline void expect_code_statistics(const std::function<SPECode(uint64_t seed)>& draw, int64_t m,
                                   int64_t n, const at::Tensor& var_q, const at::Tensor& var_k,
                                   const at::Tensor& cov, int draws) {
  std::vector<double> z;
  double realizations = 0;
  for (int t = 0; t < draws; ++t) {
    SPECode code = draw(1000 + t).materialise();
    const double r = code.realizations(), d = code.dim();
    realizations = r;
    at::Tensor s = (code.qbar[m] * code.kbar[n]).sum(-1).to(at::kDouble);  // (H, D)
    at::Tensor mean = r * cov / std::sqrt(r * d);
    at::Tensor sd = at::sqrt((var_q * var_k + cov * cov) / d);
    at::Tensor standardised = ((s - mean) / sd).flatten();
    for (int64_t i = 0; i < standardised.numel(); ++i) z.push_back(standardised[i].item<double>());
  }
  expect_standardised(z, realizations);
}

}  // namespace spe::testing
