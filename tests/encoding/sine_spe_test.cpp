// sineSPE against slow, explicit float64 implementations written here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "code_statistics.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "support/errors.h"
#include "support/gradcheck.h"

namespace spe {
namespace {

constexpr double kPi = M_PI;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double x) { return std::log1p(std::exp(x)); }

SineSPE make_sine(int64_t heads, int64_t dim, int64_t sines, int64_t realizations, uint64_t seed = 0) {
  at::manual_seed(seed);
  SineSPE spe(SineSPEOptions(heads, dim).sines(sines).realizations(realizations));
  spe->to(at::kDouble);
  return spe;
}

// Omega_q(t) or Omega_k(t) of (h, d) entry j, written out.
double omega(const SineSPE& spe, int64_t h, int64_t d, int64_t j, double t, bool query) {
  const int64_t k = j / 2;
  const double f = sigmoid(spe->freqs[h][d][k].item<double>()) / 2;
  const double phase = 2 * kPi * f * t + (query ? spe->offsets[h][d][k].item<double>() : 0.0);
  return j % 2 == 0 ? std::cos(phase) : std::sin(phase);
}

double lambda_sq_over_2k(const SineSPE& spe, int64_t h, int64_t d, int64_t j) {
  const double lambda = softplus(spe->gains[h][d][j / 2].item<double>());
  return lambda * lambda / (2.0 * spe->options.sines());
}

TEST(SineSPE, InitialisationFollowsTheReference) {
  const int64_t H = 3, D = 4, K = 5;
  at::manual_seed(11);
  SineSPE spe(SineSPEOptions(H, D).sines(K));
  at::manual_seed(11);  // the same draws, in the reference's order: freqs, offsets, gains
  at::Tensor f = at::randn({H, D, K}), o = at::randn({H, D, K}), g = at::randn({H, D, K});
  EXPECT_TRUE(at::allclose(spe->freqs, f - 4.0));
  EXPECT_TRUE(at::allclose(spe->offsets, o));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) {
      double norm = 0;
      for (int64_t k = 0; k < K; ++k) norm += std::pow(g[h][d][k].item<double>(), 2);
      norm = std::sqrt(norm);
      for (int64_t k = 0; k < K; ++k)
        EXPECT_NEAR(spe->gains[h][d][k].item<double>(), g[h][d][k].item<double>() / (std::sqrt(norm) / 2), 1e-5);
    }
  EXPECT_EQ(spe->parameters().size(), 3u);
}

TEST(SineSPE, SpreadInitialisationGivesGeometricAngularFrequencies) {
  const int64_t H = 2, D = 3, K = 4;
  SineSPE spe(SineSPEOptions(H, D).sines(K).init(SineInit::spread));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t k = 0; k < K; ++k) {
        const double angular = 2 * kPi * sigmoid(spe->freqs[h][d][k].item<double>()) / 2;
        const double expected = std::pow(10000.0, -double(d * K + k) / double(D * K));
        EXPECT_NEAR(angular / expected, 1.0, 1e-5) << h << " " << d << " " << k;
      }
}

TEST(SineSPE, CodeMatchesExplicitSums) {
  const int64_t H = 2, D = 3, K = 2, R = 4, L = 6;
  SineSPE spe = make_sine(H, D, K, R);
  SPECode code = spe->forward(L, c10::nullopt, make_generator(5)).materialise();
  auto g = make_generator(5);
  at::Tensor z = at::randn({H, D, 2 * K, R}, g, at::kDouble);  // the same raw draws
  const double scale = std::pow(R * D, 0.25);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t r = 0; r < R; ++r) {
          double q = 0, k = 0;
          for (int64_t j = 0; j < 2 * K; ++j) {
            const double zs = z[h][d][j][r].item<double>() * std::sqrt(lambda_sq_over_2k(spe, h, d, j));
            q += omega(spe, h, d, j, t, true) * zs;
            k += omega(spe, h, d, j, t, false) * zs;
          }
          EXPECT_NEAR(code.qbar[t][h][d][r].item<double>(), q / scale, 1e-12);
          EXPECT_NEAR(code.kbar[t][h][d][r].item<double>(), k / scale, 1e-12);
        }
}

TEST(SineSPE, ExpectedKernelEqualsTheExplicitPositionalMatrix) {
  const int64_t H = 2, D = 3, K = 3, R = 16, L = 7;
  SineSPE spe = make_sine(H, D, K, R, 3);
  at::Tensor kernel = spe->expected_kernel(L);
  ASSERT_EQ(kernel.sizes(), at::IntArrayRef({H, D, 2 * L - 1}));
  const double constant = R / std::sqrt(double(R * D));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t m = 0; m < L; ++m)
        for (int64_t n = 0; n < L; ++n) {
          // E[Qbar(m) Kbar(n)] = Omega_q(m)^T diag(lambda^2 / 2K) Omega_k(n) * R / sqrt(R D)
          double p = 0;
          for (int64_t j = 0; j < 2 * K; ++j)
            p += omega(spe, h, d, j, m, true) * lambda_sq_over_2k(spe, h, d, j) * omega(spe, h, d, j, n, false);
          EXPECT_NEAR(kernel[h][d][m - n + L - 1].item<double>(), constant * p, 1e-12);
        }
}

// The exact features: sum_{d, j} of a query's times a key's is sum_d q_md k_nd P_d(m - n), with
// P written out, at positions far from 0 (start) so that the offset of the decoder's steps counts.
TEST(SineSPE, ExactFeaturesGiveTheKernelWithoutNoise) {
  const int64_t H = 2, D = 3, K = 2, L = 5, start = 1000;
  SineSPE spe = make_sine(H, D, K, 8, 4);
  at::manual_seed(2);
  const at::Tensor q = at::randn({2, L, H, D}, at::kDouble), k = at::randn({2, L, H, D}, at::kDouble);
  const at::Tensor fq = spe->exact_features(q, true, start), fk = spe->exact_features(k, false, start);
  ASSERT_EQ(fq.sizes(), at::IntArrayRef({2, L, H, D, 2 * K}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < L; ++m)
        for (int64_t n = 0; n < L; ++n) {
          double expected = 0;
          for (int64_t d = 0; d < D; ++d)
            for (int64_t j = 0; j < 2 * K; ++j)
              expected += q[b][m][h][d].item<double>() * k[b][n][h][d].item<double>() *
                          omega(spe, h, d, j, start + m, true) * lambda_sq_over_2k(spe, h, d, j) *
                          omega(spe, h, d, j, start + n, false);
          EXPECT_NEAR((fq[b][m][h] * fk[b][n][h]).sum().item<double>(), expected, 1e-10);
        }
  // Summed over the batch's features, it is the expected kernel of a code with R = D (constant 1).
  const at::Tensor ones = at::ones({1, L, H, D}, at::kDouble);
  const at::Tensor products = at::einsum("mhdj,nhdj->hdmn", {spe->exact_features(ones, true)[0],
                                                             spe->exact_features(ones, false)[0]});
  const at::Tensor kernel = spe->expected_kernel(L, D);
  for (int64_t m = 0; m < L; ++m)
    for (int64_t n = 0; n < L; ++n)
      EXPECT_TRUE(at::allclose(products.select(2, m).select(2, n), kernel.select(2, m - n + L - 1), 1e-10, 1e-12));
}

TEST(SineSPE, GradientsOfTheExactFeatures) {
  const int64_t H = 2, D = 2, K = 2, L = 4;
  SineSPE spe = make_sine(H, D, K, 3, 5);
  SPEFilter filter(SPEFilterOptions(H, D).gated(true));
  filter->to(at::kDouble);
  at::manual_seed(3);
  at::Tensor x = at::randn({2, L, H, D}, at::kDouble).requires_grad_();
  const at::Tensor w = at::randn({2, L, H, D * (2 * K + 1)}, at::kDouble);
  auto loss = [&] {
    return (filter->gate_features(x, spe->exact_features(x, true, 7)) * w).sum() +
           (filter->gate_features(x, spe->exact_features(x, false, 7)) * w).pow(2).sum();
  };
  testing::expect_gradients_match(loss, {{"x", x}, {"freqs", spe->freqs}, {"offsets", spe->offsets},
                                         {"gains", spe->gains}, {"gate", filter->gate}});
  // The same through the gated coefficients (the models' path: one product over the batch).
  auto through_coefficients = [&](bool query_side) {
    const at::Tensor rows = filter->gate_coefficients(spe->exact_coefficients(L, query_side, 7, at::kDouble));
    return (x.unsqueeze(-1) * rows).flatten(3);
  };
  auto loss_of_coefficients = [&] {
    return (through_coefficients(true) * w).sum() + (through_coefficients(false) * w).pow(2).sum();
  };
  testing::expect_gradients_match(loss_of_coefficients, {{"x", x}, {"freqs", spe->freqs}, {"offsets", spe->offsets},
                                                         {"gains", spe->gains}, {"gate", filter->gate}});
}

// x times the gated coefficients is the gated exact features, gated or not, on either side, far
// from position 0; bad sizes are named.
TEST(SineSPE, GatedCoefficientsGiveTheGatedExactFeatures) {
  const int64_t H = 2, D = 3, K = 2, L = 5, start = 300;
  SineSPE spe = make_sine(H, D, K, 8, 6);
  at::manual_seed(4);
  const at::Tensor x = at::randn({3, L, H, D}, at::kDouble);
  for (bool gated : {false, true}) {
    SPEFilter filter(SPEFilterOptions(H, D).gated(gated));
    filter->to(at::kDouble);
    if (gated) filter->gate.data().normal_();
    for (bool query_side : {true, false}) {
      const at::Tensor rows = filter->gate_coefficients(spe->exact_coefficients(L, query_side, start, at::kDouble));
      ASSERT_EQ(rows.sizes(), at::IntArrayRef({L, H, D, 2 * K + (gated ? 1 : 0)}));
      const at::Tensor expected = filter->gate_features(x, spe->exact_features(x, query_side, start));
      EXPECT_TRUE(at::allclose((x.unsqueeze(-1) * rows).flatten(3), expected, 1e-14, 1e-14)) << gated << query_side;
    }
    EXPECT_ERROR_CONTAINS(filter->gate_coefficients(at::zeros({L, H, D + 1, 2 * K}, at::kDouble)),
                          "exact coefficients must be (N, H, D, J) with (H, D) = (2, 3)");
  }
  EXPECT_ERROR_CONTAINS(spe->exact_coefficients(-1, true, 0, at::kDouble), "length must be >= 0, got -1");
  EXPECT_EQ(spe->exact_coefficients(0, true, 0, at::kDouble).size(0), 0);
}

// Exact per-(h, d) variances and covariance of the unscaled codes Qbar(m), Kbar(n).
struct Moments {
  at::Tensor var_q, var_k, cov;
};
Moments sine_moments(const SineSPE& spe, int64_t m, int64_t n) {
  const int64_t H = spe->options.heads(), D = spe->options.dim(), K = spe->options.sines();
  Moments out{at::zeros({H, D}, at::kDouble), at::zeros({H, D}, at::kDouble), at::zeros({H, D}, at::kDouble)};
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < 2 * K; ++j) {
        const double w = lambda_sq_over_2k(spe, h, d, j);
        out.var_q[h][d] += w * std::pow(omega(spe, h, d, j, m, true), 2);
        out.var_k[h][d] += w * std::pow(omega(spe, h, d, j, n, false), 2);
        out.cov[h][d] += w * omega(spe, h, d, j, m, true) * omega(spe, h, d, j, n, false);
      }
  return out;
}

TEST(SineSPE, EmpiricalKernelConvergesAtRateOneOverSqrtR) {
  const int64_t H = 4, D = 8, K = 3, m = 9, n = 4;
  for (int64_t R : {16, 256}) {
    SineSPE spe = make_sine(H, D, K, R, 21);
    Moments mo = sine_moments(spe, m, n);
    testing::expect_code_statistics(
        [&](uint64_t seed) { return spe->forward(12, c10::nullopt, make_generator(seed)); }, m, n,
        mo.var_q, mo.var_k, mo.cov, 60);
  }
}

TEST(SineSPE, GatedCodeHasTheGatedMoments) {
  const int64_t H = 4, D = 8, K = 3, R = 64, m = 2, n = 7;
  SineSPE spe = make_sine(H, D, K, R, 22);
  SPEFilter filter(SPEFilterOptions(H, D).gated(true));
  filter->to(at::kDouble);
  Moments mo = sine_moments(spe, m, n);
  at::Tensor s = at::sigmoid(filter->gate).detach();
  testing::expect_code_statistics(
      [&](uint64_t seed) {
        return filter->apply_gate(spe->forward(10, c10::nullopt, make_generator(seed)), make_generator(seed + 7));
      },
      m, n, (1 - s) * mo.var_q + s, (1 - s) * mo.var_k + s, (1 - s) * mo.cov + s, 60);
  // and the filter's expected kernel is that mean
  at::Tensor gated = filter->expected_kernel(spe->expected_kernel(10), R);
  at::Tensor mean = R * ((1 - s) * mo.cov + s) / std::sqrt(double(R * D));
  EXPECT_TRUE(at::allclose(gated.select(2, m - n + 9), mean, 1e-10, 1e-12));
}

TEST(SineSPE, FilteredScoresHaveTheRelativeExpectation) {
  // E[qhat_m . khat_n] = sum_d q_md k_nd P_d(m - n), P the expected kernel.
  const int64_t H = 2, D = 4, K = 2, R = 32, L = 8, draws = 400;
  SineSPE spe = make_sine(H, D, K, R, 5);
  SPEFilter filter(SPEFilterOptions(H, D).gated(false));
  at::manual_seed(8);
  at::Tensor q = at::randn({1, L, H, D}, at::kDouble), k = at::randn({1, L, H, D}, at::kDouble);
  at::Tensor kernel = spe->expected_kernel(L);
  std::vector<at::Tensor> scores;
  for (int t = 0; t < draws; ++t) {
    auto [qhat, khat] = filter->forward(q, k, spe->forward(L, c10::nullopt, make_generator(50 + t)));
    scores.push_back(at::einsum("bmhr,bnhr->hmn", {qhat, khat}));
  }
  at::Tensor all = at::stack(scores);  // (draws, H, L, L)
  at::Tensor mean = all.mean(0), standard_error = all.std(0) / std::sqrt(double(draws));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t m = 0; m < L; ++m)
      for (int64_t n = 0; n < L; ++n) {
        double exact = 0;
        for (int64_t d = 0; d < D; ++d)
          exact += q[0][m][h][d].item<double>() * k[0][n][h][d].item<double>() * kernel[h][d][m - n + L - 1].item<double>();
        EXPECT_LT(std::abs(mean[h][m][n].item<double>() - exact), 5 * standard_error[h][m][n].item<double>())
            << "h " << h << " m " << m << " n " << n;
      }
}

SineSPE make_orthogonal_sine(int64_t heads, int64_t dim, int64_t sines, int64_t realizations, uint64_t seed) {
  at::manual_seed(seed);
  SineSPE spe(SineSPEOptions(heads, dim).sines(sines).realizations(realizations).noise(SPENoise::orthogonal));
  spe->to(at::kDouble);
  return spe;
}

// qhat_m . khat_n for every (head, m, n) of one draw: (H, L, L).
at::Tensor filtered_scores(SineSPE& spe, SPEFilter& filter, const at::Tensor& q, const at::Tensor& k, uint64_t seed) {
  auto [qhat, khat] = filter->forward(q, k, spe->forward(q.size(1), c10::nullopt, make_generator(seed)));
  return at::einsum("bmhr,bnhr->hmn", {qhat, khat});
}

// sum_d q_md k_nd P_d(m - n) for a kernel (H, D, 2L - 1) over lags -(L - 1) .. L - 1: (H, L, L).
at::Tensor relative_scores(const at::Tensor& kernel, const at::Tensor& q, const at::Tensor& k) {
  const int64_t L = q.size(1);
  const at::Tensor lags = at::arange(L).unsqueeze(1) - at::arange(L).unsqueeze(0) + (L - 1);  // (L, L)
  const at::Tensor p = kernel.index_select(2, lags.flatten()).view({kernel.size(0), kernel.size(1), L, L});
  return at::einsum("mhd,nhd,hdmn->hmn", {q[0], k[0], p});
}

// The same with sineSPE's expected kernel.
at::Tensor relative_scores(SineSPE& spe, const at::Tensor& q, const at::Tensor& k) {
  return relative_scores(spe->expected_kernel(q.size(1)), q, k);
}

// Orthogonal noise: the rows of Z (each feature's 2K, features in blocks of floor(R / 2K)) are
// orthogonal within a block with norm sqrt(R), so each feature's code products are its kernel in
// every draw, and the products between two features of a block vanish.
TEST(SineSPE, OrthogonalNoiseMakesEachFeaturesKernelExact) {
  const int64_t H = 2, D = 3, K = 2, L = 6;
  for (int64_t R : {5, 8, 13}) {
    SineSPE spe = make_orthogonal_sine(H, D, K, R, 31);
    const at::Tensor kernel = spe->expected_kernel(L);  // (H, D, 2L - 1)
    for (uint64_t seed : {1, 2, 3}) {
      const SPECode code = spe->forward(L, c10::nullopt, make_generator(seed)).materialise();
      const at::Tensor products = at::einsum("mhdr,nhdr->hdmn", {code.qbar, code.kbar});
      for (int64_t m = 0; m < L; ++m)
        for (int64_t n = 0; n < L; ++n)
          EXPECT_TRUE(at::allclose(products.select(2, m).select(2, n), kernel.select(2, m - n + L - 1), 1e-10, 1e-12))
              << "R " << R << " seed " << seed << " m " << m << " n " << n;
      const at::Tensor lambda = at::softplus(spe->gains).repeat_interleave(2, -1) / std::sqrt(2.0 * K);
      const at::Tensor z = (spe->sample_noise(R, make_generator(seed)) / lambda.unsqueeze(-1)).flatten(1, 2);  // (H, D 2K, R)
      const at::Tensor gram = at::matmul(z, z.transpose(1, 2));
      const int64_t block = (R / (2 * K)) * 2 * K;
      for (int64_t i = 0; i < D * 2 * K; ++i) {
        for (int64_t j = 0; j < D * 2 * K; ++j) {
          if (i / block != j / block) continue;
          EXPECT_NEAR(gram[0][i][j].item<double>(), i == j ? double(R) : 0.0, 1e-9) << "R " << R << " rows " << i << ", " << j;
        }
      }
    }
  }
}

// With R >= 2K D every product of the filtered queries and keys is the relative score itself.
TEST(SineSPE, OrthogonalNoiseWithTwoKDRealizationsGivesTheExactScores) {
  const int64_t H = 2, D = 3, K = 2, L = 7;
  SineSPE spe = make_orthogonal_sine(H, D, K, 2 * K * D, 32);
  SPEFilter filter(SPEFilterOptions(H, D).gated(false));
  at::manual_seed(9);
  const at::Tensor q = at::randn({1, L, H, D}, at::kDouble), k = at::randn({1, L, H, D}, at::kDouble);
  for (uint64_t seed : {4, 5})
    EXPECT_TRUE(at::allclose(filtered_scores(spe, filter, q, k, seed), relative_scores(spe, q, k), 1e-10, 1e-12));
}

// Below 2K D, still unbiased, with less variance than i.i.d. draws: of the D^2 = 16 feature pairs
// the 4 own-feature products are exact and the 4 pairs within a block (2 features each) vanish;
// the 8 across blocks keep about the i.i.d. variance, so the variance is about half. With 400
// draws each sample variance has a relative sd of sqrt(2 / 399) = 0.07, the summed ones less:
// a ratio below 0.75 is far outside chance if the two were equal.
TEST(SineSPE, OrthogonalNoiseIsUnbiasedWithLessVariance) {
  const int64_t H = 2, D = 4, K = 2, R = 8, L = 6, draws = 400;
  SineSPE orthogonal = make_orthogonal_sine(H, D, K, R, 33), iid = make_sine(H, D, K, R, 33);
  SPEFilter filter(SPEFilterOptions(H, D).gated(false));
  at::manual_seed(10);
  const at::Tensor q = at::randn({1, L, H, D}, at::kDouble), k = at::randn({1, L, H, D}, at::kDouble);
  std::vector<at::Tensor> orthogonal_scores, iid_scores;
  for (int t = 0; t < draws; ++t) {
    orthogonal_scores.push_back(filtered_scores(orthogonal, filter, q, k, 100 + t));
    iid_scores.push_back(filtered_scores(iid, filter, q, k, 100 + t));
  }
  const at::Tensor all = at::stack(orthogonal_scores), exact = relative_scores(orthogonal, q, k);
  const at::Tensor standard_error = all.std(0) / std::sqrt(double(draws));
  EXPECT_TRUE((((all.mean(0) - exact).abs() - 5 * standard_error) <= 0).all().item<bool>())
      << "largest error in standard errors: " << ((all.mean(0) - exact).abs() / standard_error).max().item<double>();
  const double ratio = (all.var(0).sum() / at::stack(iid_scores).var(0).sum()).item<double>();
  EXPECT_LT(ratio, 0.75);
  EXPECT_GT(ratio, 0.0);
}

SineSPE make_sine_with_gate_noise(int64_t heads, int64_t dim, int64_t sines, int64_t realizations, uint64_t seed) {
  at::manual_seed(seed);
  SineSPE spe(SineSPEOptions(heads, dim).sines(sines).realizations(realizations).noise(SPENoise::orthogonal).gate_noise(true));
  spe->to(at::kDouble);
  return spe;
}

SPEFilter make_orthogonal_gate(int64_t heads, int64_t dim, uint64_t seed) {
  at::manual_seed(seed);
  SPEFilter filter(SPEFilterOptions(heads, dim).gated(true).noise(SPENoise::orthogonal));
  filter->to(at::kDouble);
  return filter;
}

// The gate's row drawn with the code's 2K in one orthogonal block: with R = (2K + 1) D all of a
// head's rows are orthogonal, so every gated product is its expectation, (1 - s) P + s sqrt(R / D)
// per feature, in every draw. The gate's own draw (orthogonal among the gate's rows only) is not.
TEST(SineSPE, GateNoiseDrawnWithTheCodeMakesTheGatedScoresExact) {
  const int64_t H = 2, D = 3, K = 2, L = 7, R = (2 * K + 1) * D;
  SineSPE joint = make_sine_with_gate_noise(H, D, K, R, 34), apart = make_orthogonal_sine(H, D, K, R, 34);
  SPEFilter filter = make_orthogonal_gate(H, D, 35);
  at::manual_seed(11);
  const at::Tensor q = at::randn({1, L, H, D}, at::kDouble), k = at::randn({1, L, H, D}, at::kDouble);
  const at::Tensor expected = relative_scores(filter->expected_kernel(joint->expected_kernel(L), R), q, k);
  const at::Tensor noise = joint->sample_noise(R, make_generator(1));
  ASSERT_EQ(noise.sizes(), at::IntArrayRef({H, D, 2 * K + 1, R}));
  EXPECT_TRUE(at::allclose(noise.select(2, 2 * K).pow(2).sum(-1), at::full({H, D}, double(R), at::kDouble), 1e-10, 1e-10));
  EXPECT_TRUE(joint->forward(L, c10::nullopt, make_generator(1)).gate_noise.defined());
  EXPECT_FALSE(apart->forward(L, c10::nullopt, make_generator(1)).gate_noise.defined());
  for (uint64_t seed : {4, 5}) {
    EXPECT_TRUE(at::allclose(filtered_scores(joint, filter, q, k, seed), expected, 1e-10, 1e-12)) << "seed " << seed;
    EXPECT_GT((filtered_scores(apart, filter, q, k, seed) - expected).abs().max().item<double>(), 1e-3);
  }
}

// Below (2K + 1) D the joint draw is still unbiased (D 4, K 1: blocks of 2 features in R 6).
TEST(SineSPE, GateNoiseDrawnWithTheCodeIsUnbiased) {
  const int64_t H = 2, D = 4, K = 1, R = 6, L = 6, draws = 400;
  SineSPE joint = make_sine_with_gate_noise(H, D, K, R, 36);
  SPEFilter filter = make_orthogonal_gate(H, D, 37);
  at::manual_seed(12);
  const at::Tensor q = at::randn({1, L, H, D}, at::kDouble), k = at::randn({1, L, H, D}, at::kDouble);
  const at::Tensor expected = relative_scores(filter->expected_kernel(joint->expected_kernel(L), R), q, k);
  std::vector<at::Tensor> scores;
  for (int t = 0; t < draws; ++t) scores.push_back(filtered_scores(joint, filter, q, k, 200 + t));
  const at::Tensor all = at::stack(scores), standard_error = all.std(0) / std::sqrt(double(draws));
  EXPECT_TRUE((((all.mean(0) - expected).abs() - 5 * standard_error) <= 0).all().item<bool>())
      << "largest error in standard errors: " << ((all.mean(0) - expected).abs() / standard_error).max().item<double>();
  EXPECT_GT(standard_error.min().item<double>(), 0.0);  // not exact: blocks hold 2 of the 4 features
}

TEST(SineSPE, GradientsOfEveryParameter) {
  const int64_t H = 2, D = 2, K = 2, R = 3, L = 5;
  SineSPE spe = make_sine(H, D, K, R, 9);
  at::manual_seed(1);
  at::Tensor q = at::randn({2, L, H, D}, at::kDouble), k = at::randn({2, L, H, D}, at::kDouble);
  at::Tensor wq = at::randn({2, L, H, R}, at::kDouble), wk = at::randn({2, L, H, R}, at::kDouble);
  SPEFilter filter(SPEFilterOptions(H, D).gated(true));
  filter->to(at::kDouble);
  auto loss = [&] {
    auto [qhat, khat] = filter->forward(q, k, spe->forward(L, c10::nullopt, make_generator(4)), make_generator(6));
    return (qhat * wq).sum() + (khat * wk).sum() + spe->expected_kernel(L).pow(2).sum();
  };
  testing::expect_gradients_match(loss, {{"freqs", spe->freqs}, {"offsets", spe->offsets},
                                         {"gains", spe->gains}, {"gate", filter->gate}});
}

TEST(SineSPE, RealizationsOverrideSeedsAndDtypes) {
  SineSPE spe = make_sine(2, 3, 2, 8);
  EXPECT_EQ(spe->forward(5).materialise().qbar.sizes(), at::IntArrayRef({5, 2, 3, 8}));
  EXPECT_EQ(spe->forward(5, 3).materialise().kbar.sizes(), at::IntArrayRef({5, 2, 3, 3}));
  SPECode a = spe->forward(5, c10::nullopt, make_generator(1)).materialise();
  SPECode b = spe->forward(5, c10::nullopt, make_generator(1)).materialise();
  SPECode c = spe->forward(5, c10::nullopt, make_generator(2)).materialise();
  EXPECT_TRUE(at::equal(a.qbar, b.qbar));
  EXPECT_FALSE(at::allclose(a.qbar, c.qbar));
  // float32 parameters give float32 codes that agree with float64 ones, even far into a sequence
  SineSPE single = make_sine(2, 3, 2, 8);
  single->to(at::kFloat);
  at::Tensor noise = spe->sample_noise(8, make_generator(1));
  at::Tensor far = at::arange(100000, 100010, at::kLong);
  SPECode f32 = single->code_at(far, noise.to(at::kFloat)), f64 = spe->code_at(far, noise);
  EXPECT_EQ(f32.qbar.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(f32.qbar.to(at::kDouble), f64.qbar, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(f32.kbar.to(at::kDouble), f64.kbar, 1e-4, 1e-5));
  EXPECT_EQ(single->forward(5).scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(single->expected_kernel(5).to(at::kDouble), spe->expected_kernel(5), 1e-5, 1e-6));
}

TEST(SineSPE, CodeAtNewPositionsExtendsTheSequence) {
  SineSPE spe = make_sine(2, 3, 2, 8);
  at::Tensor noise = spe->sample_noise(8, make_generator(3));
  SPECode whole = spe->code_at(at::arange(10, at::kLong), noise);
  SPECode last = spe->code_at(at::full({1}, 9, at::kLong), noise);
  EXPECT_TRUE(at::allclose(whole.qbar[9], last.qbar[0]));
  EXPECT_TRUE(at::allclose(whole.kbar[9], last.kbar[0]));
}

TEST(SineSPE, BadArgumentsAreNamed) {
  EXPECT_ERROR_CONTAINS(SineSPE(SineSPEOptions(2, 4).sines(0)), "sines (K) must be positive, got 0");
  EXPECT_ERROR_CONTAINS(SineSPE(SineSPEOptions(0, 4)), "heads must be positive, got 0");
  EXPECT_ERROR_CONTAINS(SineSPE(SineSPEOptions(2, 4).realizations(-3)), "realizations (R) must be positive, got -3");
  SineSPE spe(SineSPEOptions(2, 4));
  EXPECT_ERROR_CONTAINS(spe->forward(4, 0), "realizations (R) must be positive, got 0");
  EXPECT_ERROR_CONTAINS(spe->forward(0), "length must be positive, got 0");
  EXPECT_ERROR_CONTAINS(spe->code_at(at::zeros({2, 2}), spe->sample_noise(4)), "positions must be 1-D");
  EXPECT_ERROR_CONTAINS(spe->code_at(at::arange(3), at::zeros({2, 4, 4, 4})),
                        "noise must be (H, D, 2K, R) or, with the gate's row, (H, D, 2K + 1, R) = (2, 4, 2 [+ 1], R), "
                        "got [2, 4, 4, 4]");
  EXPECT_ERROR_CONTAINS(spe->exact_features(at::zeros({2, 3, 2, 5}), true), "input must be (B, N, H, D) with H = 2, D = 4");
  EXPECT_ERROR_CONTAINS(spe->exact_features(at::zeros({2, 3, 2, 4}), true, -1), "start must be >= 0, got -1");
}

}  // namespace
}  // namespace spe
