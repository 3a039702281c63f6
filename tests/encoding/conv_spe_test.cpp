// convSPE (1-D and 2-D) against slow, explicit float64 implementations written here.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "code_statistics.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/spe_filter.h"
#include "support/errors.h"
#include "support/gradcheck.h"

namespace spe {
namespace {

ConvSPE make_conv(int64_t heads, int64_t dim, int64_t ndim, int64_t size, int64_t realizations,
                  uint64_t seed = 0) {
  at::manual_seed(seed);
  ConvSPE spe(ConvSPEOptions(heads, dim).ndim(ndim).kernel_size(size).realizations(realizations));
  spe->to(at::kDouble);
  return spe;
}

double w(const at::Tensor& weight, int64_t h, int64_t d, int64_t j1, int64_t j2 = -1) {
  return j2 < 0 ? weight[h][d][j1].item<double>() : weight[h][d][j1][j2].item<double>();
}

TEST(ConvSPE, InitialisationIsUniformScaled) {
  for (int64_t ndim : {1, 2}) {
    const int64_t S = 6;
    ConvSPE spe = make_conv(4, 8, ndim, S, 4, 3);
    const double top = 1.0 / std::sqrt(std::pow(S, ndim) / 2.0);
    for (const at::Tensor& weight : {spe->weight_q, spe->weight_k}) {
      EXPECT_EQ(weight.dim(), 2 + ndim);
      EXPECT_GE(weight.min().item<double>(), 0.0);
      EXPECT_LT(weight.max().item<double>(), top);
      // the mean of n U[0, top) draws: top / 2 +- 5 top / sqrt(12 n)
      const double n = weight.numel();
      EXPECT_NEAR(weight.mean().item<double>(), top / 2, 5 * top / std::sqrt(12 * n));
    }
  }
}

TEST(ConvSPE, OneDimensionalCodeMatchesExplicitSums) {
  const int64_t H = 2, D = 2, S = 3, R = 3, L = 5;
  ConvSPE spe = make_conv(H, D, 1, S, R);
  SPECode code = spe->forward({L}, c10::nullopt, make_generator(8));
  // The noise: a key from the generator, then one row of H*D*R normals per position.
  const at::Tensor z = keyed_normal_rows(draw_key(make_generator(8)), 0, L + 4 * S, H * D * R, at::kDouble)
                           .view({L + 4 * S, H * D, R});
  const double scale = std::pow(R * D, 0.25);
  for (int64_t n = 0; n < L; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t r = 0; r < R; ++r) {
          double q = 0, k = 0;
          for (int64_t j = 0; j < S; ++j) {
            const double noise = z[n + S + j][h * D + d][r].item<double>();
            q += w(spe->weight_q, h, d, j) * noise;
            k += w(spe->weight_k, h, d, j) * noise;
          }
          EXPECT_NEAR(code.qbar[n][h][d][r].item<double>(), q / scale, 1e-12);
          EXPECT_NEAR(code.kbar[n][h][d][r].item<double>(), k / scale, 1e-12);
        }
}

TEST(ConvSPE, TwoDimensionalCodeMatchesExplicitSums) {
  const int64_t H = 1, D = 2, S = 2, R = 2, L1 = 3, L2 = 4;
  ConvSPE spe = make_conv(H, D, 2, S, R);
  SPECode code = spe->forward({L1, L2}, c10::nullopt, make_generator(9));
  ASSERT_EQ(code.qbar.sizes(), at::IntArrayRef({L1 * L2, H, D, R}));
  // One row of H*D*R normals per position of the padded grid, row-major.
  const at::Tensor z = keyed_normal_rows(draw_key(make_generator(9)), 0, (L1 + 4 * S) * (L2 + 4 * S), H * D * R,
                                         at::kDouble)
                           .view({L1 + 4 * S, L2 + 4 * S, H * D, R});
  const double scale = std::pow(R * D, 0.25);
  for (int64_t n1 = 0; n1 < L1; ++n1)
    for (int64_t n2 = 0; n2 < L2; ++n2)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t r = 0; r < R; ++r) {
          double q = 0, k = 0;
          for (int64_t j1 = 0; j1 < S; ++j1)
            for (int64_t j2 = 0; j2 < S; ++j2) {
              const double noise = z[n1 + S + j1][n2 + S + j2][d][r].item<double>();
              q += w(spe->weight_q, 0, d, j1, j2) * noise;
              k += w(spe->weight_k, 0, d, j1, j2) * noise;
            }
          const int64_t n = n1 * L2 + n2;  // row-major flattening
          EXPECT_NEAR(code.qbar[n][0][d][r].item<double>(), q / scale, 1e-12);
          EXPECT_NEAR(code.kbar[n][0][d][r].item<double>(), k / scale, 1e-12);
        }
}

// Qbar(m) = sum_i A[m, i] z_i: the explicit linear map of one (h, d) from the noise to the code,
// so that E[Qbar(m) Kbar(n)] = (A B^T)[m, n] * R / sqrt(R D).
at::Tensor noise_map_1d(const at::Tensor& weight, int64_t h, int64_t d, int64_t length) {
  const int64_t S = weight.size(2);
  at::Tensor map = at::zeros({length, length + 4 * S}, at::kDouble);
  for (int64_t m = 0; m < length; ++m)
    for (int64_t j = 0; j < S; ++j) map[m][m + S + j] = w(weight, h, d, j);
  return map;
}

TEST(ConvSPE, ExpectedKernelEqualsTheExplicitPositionalMatrix) {
  const int64_t H = 2, D = 3, S = 4, R = 8, L = 6;
  ConvSPE spe = make_conv(H, D, 1, S, R, 4);
  at::Tensor kernel = spe->expected_kernel({L});
  ASSERT_EQ(kernel.sizes(), at::IntArrayRef({H, D, 2 * L - 1}));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) {
      at::Tensor p = at::mm(noise_map_1d(spe->weight_q, h, d, L), noise_map_1d(spe->weight_k, h, d, L).t()) *
                     (R / std::sqrt(double(R * D)));
      for (int64_t m = 0; m < L; ++m)
        for (int64_t n = 0; n < L; ++n)
          EXPECT_NEAR(kernel[h][d][m - n + L - 1].item<double>(), p[m][n].item<double>(), 1e-12);
    }
}

TEST(ConvSPE, TwoDimensionalExpectedKernelEqualsTheExplicitPositionalMatrix) {
  const int64_t H = 1, D = 2, S = 2, R = 4, L1 = 3, L2 = 3;
  ConvSPE spe = make_conv(H, D, 2, S, R, 5);
  at::Tensor kernel = spe->expected_kernel({L1, L2});
  ASSERT_EQ(kernel.sizes(), at::IntArrayRef({H, D, 2 * L1 - 1, 2 * L2 - 1}));
  const int64_t E1 = L1 + 4 * S, E2 = L2 + 4 * S;
  for (int64_t d = 0; d < D; ++d) {
    at::Tensor a = at::zeros({L1 * L2, E1 * E2}, at::kDouble), b = at::zeros({L1 * L2, E1 * E2}, at::kDouble);
    for (int64_t m1 = 0; m1 < L1; ++m1)
      for (int64_t m2 = 0; m2 < L2; ++m2)
        for (int64_t j1 = 0; j1 < S; ++j1)
          for (int64_t j2 = 0; j2 < S; ++j2) {
            a[m1 * L2 + m2][(m1 + S + j1) * E2 + m2 + S + j2] = w(spe->weight_q, 0, d, j1, j2);
            b[m1 * L2 + m2][(m1 + S + j1) * E2 + m2 + S + j2] = w(spe->weight_k, 0, d, j1, j2);
          }
    at::Tensor p = at::mm(a, b.t()) * (R / std::sqrt(double(R * D)));
    for (int64_t m = 0; m < L1 * L2; ++m)
      for (int64_t n = 0; n < L1 * L2; ++n) {
        const int64_t lag1 = m / L2 - n / L2, lag2 = m % L2 - n % L2;
        EXPECT_NEAR(kernel[0][d][lag1 + L1 - 1][lag2 + L2 - 1].item<double>(), p[m][n].item<double>(), 1e-12);
      }
  }
}

TEST(ConvSPE, EmpiricalKernelConvergesAtRateOneOverSqrtR) {
  const int64_t H = 4, D = 8, S = 5, L = 10, m = 6, n = 3;
  for (int64_t R : {16, 256}) {
    ConvSPE spe = make_conv(H, D, 1, S, R, 12);
    at::Tensor var_q = at::zeros({H, D}, at::kDouble), var_k = at::zeros({H, D}, at::kDouble),
               cov = at::zeros({H, D}, at::kDouble);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        at::Tensor a = noise_map_1d(spe->weight_q, h, d, L)[m], b = noise_map_1d(spe->weight_k, h, d, L)[n];
        var_q[h][d] = a.dot(a);
        var_k[h][d] = b.dot(b);
        cov[h][d] = a.dot(b);
      }
    testing::expect_code_statistics(
        [&](uint64_t seed) { return spe->forward({L}, c10::nullopt, make_generator(seed)); }, m, n,
        var_q, var_k, cov, 60);
  }
}

TEST(ConvSPE, GradientsOfEveryParameter) {
  for (int64_t ndim : {1, 2}) {
    const int64_t H = 1, D = 2, S = 2, R = 2;
    ConvSPE spe = make_conv(H, D, ndim, S, R, 2);
    std::vector<int64_t> shape(ndim, 3);
    const int64_t N = ndim == 1 ? 3 : 9;
    at::manual_seed(1);
    at::Tensor q = at::randn({2, N, H, D}, at::kDouble), k = at::randn({2, N, H, D}, at::kDouble);
    at::Tensor wq = at::randn({2, N, H, R}, at::kDouble), wk = at::randn({2, N, H, R}, at::kDouble);
    SPEFilter filter(SPEFilterOptions(H, D).gated(false));
    auto loss = [&] {
      auto [qhat, khat] = filter->forward(q, k, spe->forward(shape, c10::nullopt, make_generator(4)));
      return (qhat * wq).sum() + (khat * wk).sum() + spe->expected_kernel(shape).pow(2).sum();
    };
    testing::expect_gradients_match(loss, {{"weight_q", spe->weight_q}, {"weight_k", spe->weight_k}});
  }
}

TEST(ConvSPE, FftAndDirectAlgorithmsAgree) {
  for (int64_t ndim : {1, 2}) {
    const int64_t S = ndim == 1 ? 40 : 5;
    std::vector<int64_t> shape(ndim, ndim == 1 ? 50 : 6);
    ConvSPE direct = make_conv(2, 3, ndim, S, 4, 8), fft = make_conv(2, 3, ndim, S, 4, 8);
    direct->options.algorithm(ConvAlgorithm::direct);
    fft->options.algorithm(ConvAlgorithm::fft);
    SPECode a = direct->forward(shape, c10::nullopt, make_generator(1));
    SPECode b = fft->forward(shape, c10::nullopt, make_generator(1));
    EXPECT_LT((a.qbar - b.qbar).abs().max().item<double>(), 1e-10) << "ndim " << ndim;
    EXPECT_LT((a.kbar - b.kbar).abs().max().item<double>(), 1e-10) << "ndim " << ndim;
    EXPECT_LT((direct->expected_kernel(shape) - fft->expected_kernel(shape)).abs().max().item<double>(), 1e-10);
    // and the gradients through the FFTs
    std::vector<int64_t> small(ndim, 3);
    ConvSPE tiny = make_conv(1, 2, ndim, 2, 2, 3);
    tiny->options.algorithm(ConvAlgorithm::fft);
    at::Tensor w = at::randn({ndim == 1 ? 3 : 9, 1, 2, 2}, at::kDouble);
    testing::expect_gradients_match(
        [&] { return (tiny->forward(small, c10::nullopt, make_generator(2)).qbar * w).sum() + tiny->expected_kernel(small).pow(2).sum(); },
        {{"weight_q", tiny->weight_q}, {"weight_k", tiny->weight_k}});
  }
}

TEST(ConvSPE, Float32AgreesWithFloat64) {
  for (int64_t ndim : {1, 2}) {
    ConvSPE f64 = make_conv(2, 3, ndim, 4, 8, 6);
    ConvSPE f32 = make_conv(2, 3, ndim, 4, 8, 6);
    f32->to(at::kFloat);
    std::vector<int64_t> shape(ndim, 7);
    EXPECT_TRUE(at::allclose(f32->expected_kernel(shape).to(at::kDouble), f64->expected_kernel(shape), 1e-5, 1e-6));
    SPECode code = f32->forward(shape, c10::nullopt, make_generator(1));
    EXPECT_EQ(code.qbar.scalar_type(), at::kFloat);
    EXPECT_EQ(code.qbar.size(0), ndim == 1 ? 7 : 49);
  }
}

TEST(ConvSPE, BadArgumentsAreNamed) {
  EXPECT_ERROR_CONTAINS(ConvSPE(ConvSPEOptions(2, 4).ndim(3)), "ndim must be 1 (sequences) or 2 (images), got 3");
  EXPECT_ERROR_CONTAINS(ConvSPE(ConvSPEOptions(2, 4).kernel_size(0)), "kernel_size (S) must be positive, got 0");
  EXPECT_ERROR_CONTAINS(ConvSPE(ConvSPEOptions(2, -1)), "dim must be positive, got -1");
  ConvSPE spe(ConvSPEOptions(2, 4).kernel_size(3).realizations(4));
  EXPECT_ERROR_CONTAINS(spe->forward({4, 4}), "expected a shape of 1 extent(s) for ndim=1, got [4, 4]");
  EXPECT_ERROR_CONTAINS(spe->forward({0}), "every extent of the shape must be positive, got 0");
  EXPECT_ERROR_CONTAINS(spe->forward({5}, -2), "realizations (R) must be positive, got -2");
  EXPECT_ERROR_CONTAINS(spe->expected_kernel({5, 5}), "expected a shape of 1 extent(s)");
}

}  // namespace
}  // namespace spe
