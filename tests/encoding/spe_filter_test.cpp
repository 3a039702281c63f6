// SPEFilter: the filtering and the gate against explicit float64 loops.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "support/errors.h"

namespace spe {
namespace {

SPECode random_code(int64_t n, int64_t h, int64_t d, int64_t r, at::ScalarType dtype = at::kDouble) {
  auto g = make_generator(77);
  return {at::randn({n, h, d, r}, g, dtype), at::randn({n, h, d, r}, g, dtype)};
}

TEST(SPEFilter, UngatedFilterIsTheSumOverFeatures) {
  const int64_t B = 2, N = 4, H = 2, D = 3, R = 5;
  SPECode code = random_code(N + 2, H, D, R);  // longer than the sequence: it is cropped
  at::manual_seed(0);
  at::Tensor q = at::randn({B, N, H, D}, at::kDouble), k = at::randn({B, N, H, D}, at::kDouble);
  SPEFilter filter(SPEFilterOptions(H, D).gated(false));
  EXPECT_TRUE(filter->parameters().empty());
  auto [qhat, khat] = filter->forward(q, k, code);
  ASSERT_EQ(qhat.sizes(), at::IntArrayRef({B, N, H, R}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < R; ++r) {
          double eq = 0, ek = 0;
          for (int64_t d = 0; d < D; ++d) {
            eq += q[b][n][h][d].item<double>() * code.qbar[n][h][d][r].item<double>();
            ek += k[b][n][h][d].item<double>() * code.kbar[n][h][d][r].item<double>();
          }
          EXPECT_NEAR(qhat[b][n][h][r].item<double>(), eq, 1e-12);
          EXPECT_NEAR(khat[b][n][h][r].item<double>(), ek, 1e-12);
        }
}

TEST(SPEFilter, GateMixesTheCodeWithSharedNoise) {
  const int64_t N = 3, H = 2, D = 2, R = 4;
  SPECode code = random_code(N, H, D, R);
  at::manual_seed(1);
  SPEFilter filter(SPEFilterOptions(H, D));
  filter->to(at::kDouble);
  ASSERT_EQ(filter->gate.sizes(), at::IntArrayRef({H, D}));
  SPECode gated = filter->apply_gate(code, make_generator(3));
  auto g = make_generator(3);
  at::Tensor eps = at::randn({H, D, R}, g, at::kDouble);
  const double noise_scale = std::pow(D * R, 0.25);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const double s = 1.0 / (1.0 + std::exp(-filter->gate[h][d].item<double>()));
        for (int64_t r = 0; r < R; ++r) {
          const double e = eps[h][d][r].item<double>() / noise_scale;
          EXPECT_NEAR(gated.qbar[n][h][d][r].item<double>(),
                      std::sqrt(1 - s) * code.qbar[n][h][d][r].item<double>() + std::sqrt(s) * e, 1e-12);
          EXPECT_NEAR(gated.kbar[n][h][d][r].item<double>(),
                      std::sqrt(1 - s) * code.kbar[n][h][d][r].item<double>() + std::sqrt(s) * e, 1e-12);
        }
      }
}

// Orthogonal gate noise: the D rows of a head (blocks of R rows when D > R) orthogonal with
// norm sqrt(R) before the (D R)^(1/4) scale, so eps_d . eps_d' = sqrt(R / D) delta_dd' exactly;
// the i.i.d. draw is not.
TEST(SPEFilter, OrthogonalGateNoiseRowsAreOrthogonal) {
  for (int64_t R : {8, 3}) {
    const int64_t H = 2, D = 5;
    SPEFilter filter(SPEFilterOptions(H, D).gated(true).noise(SPENoise::orthogonal));
    const at::Tensor eps = filter->sample_gate_noise(R, at::kDouble, make_generator(3));  // (H, D, R)
    const at::Tensor gram = at::matmul(eps, eps.transpose(1, 2));                        // (H, D, D)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        for (int64_t e = 0; e < D; ++e) {
          if (d / R != e / R) continue;  // rows of different blocks are independent, not orthogonal
          EXPECT_NEAR(gram[h][d][e].item<double>(), d == e ? std::sqrt(double(R) / D) : 0.0, 1e-12);
        }
      }
    const at::Tensor iid = SPEFilter(SPEFilterOptions(H, D))->sample_gate_noise(R, at::kDouble, make_generator(3));
    EXPECT_GT(at::matmul(iid, iid.transpose(1, 2)).select(0, 0).triu(1).abs().max().item<double>(), 1e-3);
  }
}

TEST(SPEFilter, GatedExpectedKernelFormula) {
  const int64_t H = 2, D = 3, R = 16;
  at::manual_seed(2);
  SPEFilter filter(SPEFilterOptions(H, D));
  filter->to(at::kDouble);
  at::Tensor ungated = at::randn({H, D, 5}, at::kDouble);
  at::Tensor gated = filter->expected_kernel(ungated, R);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t l = 0; l < 5; ++l) {
        const double s = 1.0 / (1.0 + std::exp(-filter->gate[h][d].item<double>()));
        EXPECT_NEAR(gated[h][d][l].item<double>(),
                    (1 - s) * ungated[h][d][l].item<double>() + s * std::sqrt(double(R) / D), 1e-12);
      }
  SPEFilter plain(SPEFilterOptions(H, D).gated(false));
  EXPECT_TRUE(at::equal(plain->expected_kernel(ungated, R), ungated));
}

// Gated exact features: their products give (1 - s_d) P_d + s_d per feature, written out.
TEST(SPEFilter, GateOnExactFeaturesMixesTheKernelWithOne) {
  const int64_t H = 2, D = 3, J = 4;
  at::manual_seed(8);
  SPEFilter filter(SPEFilterOptions(H, D).gated(true));
  filter->to(at::kDouble);
  const at::Tensor q = at::randn({1, 2, H, D}, at::kDouble), k = at::randn({1, 2, H, D}, at::kDouble);
  const at::Tensor fq = at::randn({1, 2, H, D, J}, at::kDouble), fk = at::randn({1, 2, H, D, J}, at::kDouble);
  const at::Tensor gq = filter->gate_features(q, fq), gk = filter->gate_features(k, fk);
  ASSERT_EQ(gq.sizes(), at::IntArrayRef({1, 2, H, D * (J + 1)}));
  for (int64_t h = 0; h < H; ++h) {
    double expected = 0;
    for (int64_t d = 0; d < D; ++d) {
      const double s = 1.0 / (1.0 + std::exp(-filter->gate[h][d].item<double>()));
      expected += (1 - s) * (fq[0][0][h][d] * fk[0][1][h][d]).sum().item<double>() +
                  s * q[0][0][h][d].item<double>() * k[0][1][h][d].item<double>();
    }
    EXPECT_NEAR((gq[0][0][h] * gk[0][1][h]).sum().item<double>(), expected, 1e-12);
  }
  SPEFilter ungated(SPEFilterOptions(H, D).gated(false));
  EXPECT_TRUE(at::equal(ungated->gate_features(q, fq), fq.flatten(3)));
  EXPECT_ERROR_CONTAINS(filter->gate_features(q, fq.narrow(3, 0, 2)), "exact features must be (B, N, H, D, J)");
}

// filter(q, k, code, first_row) reads the code's rows first_row .. first_row + N - 1: what the
// whole sequence gets at those rows, for a factored (fused filter) and a materialised code.
TEST(SPEFilter, FirstRowSelectsTheRowsOfTheCode) {
  constexpr int64_t H = 2, D = 3, R = 4, N = 8, first = 3, rows = 4;
  SineSPE spe(SineSPEOptions(H, D).sines(2));
  spe->to(at::kDouble);
  SPEFilter filter(SPEFilterOptions(H, D));
  const SPECode factored = filter->apply_gate(spe->forward(N, R));
  const at::Tensor q = at::randn({2, N, H, D}, at::kDouble), k = at::randn({2, N, H, D}, at::kDouble);
  for (const SPECode& code : {factored, factored.materialise()}) {
    SCOPED_TRACE(code.materialised() ? "materialised" : "factored");
    auto [q_all, k_all] = filter->filter(q, k, code);
    auto [q_rows, k_rows] = filter->filter(q.narrow(1, first, rows), k.narrow(1, first, rows), code, first);
    EXPECT_LT((q_rows - q_all.narrow(1, first, rows)).abs().max().item<double>(), 1e-12);
    EXPECT_LT((k_rows - k_all.narrow(1, first, rows)).abs().max().item<double>(), 1e-12);
    EXPECT_ERROR_CONTAINS(filter->filter(q.narrow(1, 0, 6), k.narrow(1, 0, 6), code, first),
                          "6 positions from row 3 exceed the code length 8");
    EXPECT_ERROR_CONTAINS(filter->filter(q, k, code, -1), "first_row must be >= 0, got -1");
  }
}

// The gate starts at N(gate_mean, 1): over H D = 512 entries the sample mean has sd 1 / sqrt(512) =
// 0.044 and the sample sd a relative sd of 0.031, so 5 of those bound each.
TEST(SPEFilter, GateStartsAroundItsMean) {
  for (double mean : {0.0, -3.0}) {
    at::manual_seed(4);
    SPEFilter filter(SPEFilterOptions(8, 64).gate_mean(mean));
    EXPECT_NEAR(filter->gate.mean().item<double>(), mean, 5 / std::sqrt(512.0)) << "gate_mean " << mean;
    EXPECT_NEAR(filter->gate.std().item<double>(), 1.0, 5 / std::sqrt(2 * 511.0)) << "gate_mean " << mean;
  }
  EXPECT_ERROR_CONTAINS(SPEFilter(SPEFilterOptions(2, 3).gate_mean(std::nan(""))), "gate_mean must be finite, got nan");
  std::ostringstream printed;
  SPEFilter(SPEFilterOptions(2, 3).gate_mean(-3).noise(SPENoise::orthogonal))->pretty_print(printed);
  EXPECT_EQ(printed.str(), "spe::SPEFilter(heads=2, dim=3, gated=true, gate_mean=-3, noise=orthogonal)");
}

TEST(SPEFilter, BadInputIsNamed) {
  SPEFilter filter(SPEFilterOptions(2, 3).gated(false));
  SPECode code = random_code(4, 2, 3, 5);
  at::Tensor q = at::randn({1, 4, 2, 3}, at::kDouble);
  EXPECT_ERROR_CONTAINS(filter->forward(q, at::randn({1, 3, 2, 3}, at::kDouble), code),
                        "queries [1, 4, 2, 3] and keys [1, 3, 2, 3] must have the same shape");
  EXPECT_ERROR_CONTAINS(filter->forward(q.view({4, 2, 3}), q.view({4, 2, 3}), code),
                        "queries/keys must be (B, N, H, D), got shape [4, 2, 3]");
  at::Tensor long_q = at::randn({1, 6, 2, 3}, at::kDouble);
  EXPECT_ERROR_CONTAINS(filter->forward(long_q, long_q, code), "6 positions from row 0 exceed the code length 4");
  EXPECT_ERROR_CONTAINS(filter->forward(q.to(at::kFloat), q.to(at::kFloat), code),
                        "queries/keys are Float but the code is Double");
  SPECode other = random_code(4, 2, 4, 5);
  EXPECT_ERROR_CONTAINS(filter->forward(q, q, other), "code has (H, D) = (2, 4) but the filter was built for (2, 3)");
  EXPECT_ERROR_CONTAINS(filter->forward(q, q, SPECode{code.qbar, code.kbar.narrow(3, 0, 2)}),
                        "must have the same shape");
  SPECode wrong_gate_noise = code;
  wrong_gate_noise.gate_noise = at::randn({2, 3, 4}, at::kDouble);
  EXPECT_ERROR_CONTAINS(filter->forward(q, q, wrong_gate_noise),
                        "its gate noise must be (H, D, R) = (2, 3, 5), got shape [2, 3, 4]");
  EXPECT_ERROR_CONTAINS(filter->expected_kernel(at::zeros({3, 3, 2}), 4), "expected kernel must be (H, D, lags...)");
}

TEST(EmpiricalKernel, AveragesEveryPairWithTheLag) {
  SPECode code = random_code(5, 1, 2, 3);
  at::Tensor kernel = empirical_kernel(code);
  ASSERT_EQ(kernel.sizes(), at::IntArrayRef({1, 2, 9}));
  for (int64_t d = 0; d < 2; ++d)
    for (int64_t lag = -4; lag <= 4; ++lag) {
      double sum = 0;
      int count = 0;
      for (int64_t m = 0; m < 5; ++m)
        for (int64_t n = 0; n < 5; ++n)
          if (m - n == lag) {
            ++count;
            for (int64_t r = 0; r < 3; ++r) sum += code.qbar[m][0][d][r].item<double>() * code.kbar[n][0][d][r].item<double>();
          }
      EXPECT_NEAR(kernel[0][d][lag + 4].item<double>(), sum / count, 1e-12);
    }
}

}  // namespace
}  // namespace spe
