// The register-blocked products of the CPU kernels (src/kernels/cpu/vector_ops.h) against
// at::matmul in float64 and float32, over every transpose, the three starts (zero, C itself when
// accumulating, a row added to every row) and sizes that take each path of each register
// blocking: blocks of 6 rows and of each number of rows left (1 to 5), of 4 vectors and 1 vector
// of columns, and the scalar tail. Likewise the lane-wise products and the strided transposes
// of the sineSPE backward, the vectorised dot products and exponential.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/vector_ops.h"
#include "spe/random.h"

namespace spe::kernels::cpu {
namespace {

template <class Tile, typename T>
void expect_products_match(at::ScalarType dtype, double tolerance) {
  auto g = make_generator(5);
  std::vector<T> scratch;
  for (const auto& [m, n, k] : std::vector<std::array<int64_t, 3>>{{64, 64, 64}, {13, 83, 7}, {1, 1, 1}, {5, 17, 64},
                                                                   {71, 3, 20}, {9, 48, 0},
                                                                   {8, 40, 3}, {10, 33, 2}})
    for (bool trans_a : {false, true})
      for (bool trans_b : {false, true})
        for (const char* start : {"zero", "accumulate", "row_init"}) {
          const bool accumulate = start == std::string("accumulate"), with_row = start == std::string("row_init");
          // stored with a larger leading dimension than needed, as the kernels' strided views are
          const at::Tensor a_store = at::randn({trans_a ? k : m, (trans_a ? m : k) + 3}, g, dtype);
          const at::Tensor b_store = at::randn({trans_b ? n : k, (trans_b ? k : n) + 5}, g, dtype);
          const at::Tensor a = a_store.narrow(1, 0, trans_a ? m : k), b = b_store.narrow(1, 0, trans_b ? k : n);
          at::Tensor c = at::randn({m, n + 2}, g, dtype);
          const at::Tensor row = at::randn({n}, g, dtype);
          const at::Tensor start_value = accumulate ? c.narrow(1, 0, n).clone()
                                         : with_row ? row.expand({m, n})
                                                    : at::zeros({m, n}, dtype);
          const at::Tensor expected = start_value + at::matmul(trans_a ? a.t() : a, trans_b ? b.t() : b);
          small_gemm<Tile, T>(trans_a, trans_b, m, n, k, a_store.template data_ptr<T>(), a_store.size(1),
                              b_store.template data_ptr<T>(), b_store.size(1), accumulate, c.template data_ptr<T>(),
                              c.size(1), scratch, with_row ? row.template data_ptr<T>() : nullptr);
          EXPECT_LT((c.narrow(1, 0, n) - expected).abs().max().template item<double>(), tolerance * std::max<int64_t>(k, 1))
              << m << " x " << n << " x " << k << " trans " << trans_a << trans_b << " start " << start;
        }
}

// Every register blocking, compiled here for the baseline instruction set (the logic is the same).
TEST(SmallGemm, MatchesMatmulInFloat64) {
  expect_products_match<Avx512Tile, double>(at::kDouble, 1e-14);
  expect_products_match<Avx2Tile, double>(at::kDouble, 1e-14);
  expect_products_match<BaselineTile, double>(at::kDouble, 1e-14);
}
TEST(SmallGemm, MatchesMatmulInFloat32) {
  expect_products_match<Avx512Tile, float>(at::kFloat, 1e-5);
  expect_products_match<Avx2Tile, float>(at::kFloat, 1e-5);
  expect_products_match<BaselineTile, float>(at::kFloat, 1e-5);
}

// lanewise_gemm: for each lane l of one vector, C_l = A_l B_l^T, with A (m, k, lanes), B (n, k,
// lanes) and C (m, n, lanes) strided, against an einsum; sizes that take full blocks and every
// remainder of rows and of columns of each blocking (4 x 6 and 4 x 3), and k = 0.
template <class Tile, typename T>
void expect_lanewise_products_match(at::ScalarType dtype, double tolerance) {
  constexpr int64_t W = kLanes<T, Tile::bytes>;
  auto g = make_generator(6);
  for (const auto& [m, n, k] : std::vector<std::array<int64_t, 3>>{{4, 64, 64}, {5, 13, 7}, {1, 1, 1}, {3, 9, 0},
                                                                   {6, 11, 3}, {2, 8, 2}, {7, 15, 5}}) {
    const at::Tensor a = at::randn({m, k + 1, W}, g, dtype), b = at::randn({n, k + 2, W}, g, dtype);
    at::Tensor c = at::randn({m, n + 1, W}, g, dtype);
    lanewise_gemm<Tile, T>(m, n, k, a.template data_ptr<T>(), (k + 1) * W, b.template data_ptr<T>(), (k + 2) * W, W,
                           c.template data_ptr<T>(), (n + 1) * W, W);
    const at::Tensor expected = at::einsum("ipl,jpl->ijl", {a.narrow(1, 0, k), b.narrow(1, 0, k)});
    EXPECT_LT((c.narrow(1, 0, n) - expected).abs().max().template item<double>(), tolerance * std::max<int64_t>(k, 1))
        << m << " x " << n << " x " << k;
  }
}

TEST(LanewiseGemm, MatchesEinsum) {
  expect_lanewise_products_match<Avx512Tile, double>(at::kDouble, 1e-14);
  expect_lanewise_products_match<Avx2Tile, double>(at::kDouble, 1e-14);
  expect_lanewise_products_match<BaselineTile, double>(at::kDouble, 1e-14);
  expect_lanewise_products_match<Avx512Tile, float>(at::kFloat, 1e-5);
  expect_lanewise_products_match<Avx2Tile, float>(at::kFloat, 1e-5);
  expect_lanewise_products_match<BaselineTile, float>(at::kFloat, 1e-5);
}

// dot: sum_i a_i b_i, and the sum of a without b, against a float64 sum; lengths that take the
// four-vector loop, the one-vector loop and the scalar tail, each alone and together, and 0.
template <int Bytes>
void expect_dots_match() {
  auto g = make_generator(8);
  constexpr int64_t W = kLanes<double, Bytes>;
  for (const int64_t n : std::vector<int64_t>{0, 1, W - 1, W, 3 * W + 1, 4 * W, 4 * W + W + 2, 64 + 3}) {
    const at::Tensor a = at::randn({n}, g, at::kDouble), b = at::randn({n}, g, at::kDouble);
    const double* pa = a.data_ptr<double>();
    const double* pb = b.data_ptr<double>();
    EXPECT_NEAR(dot<Bytes>(pa, pb, n), (a * b).sum().item<double>(), 1e-13) << n << " values, " << Bytes << " bytes";
    EXPECT_NEAR(dot<Bytes>(pa, static_cast<const double*>(nullptr), n), a.sum().item<double>(), 1e-13)
        << n << " values, " << Bytes << " bytes";
  }
}

TEST(Dot, MatchesTheSumForEveryLength) {
  expect_dots_match<64>();
  expect_dots_match<32>();
  expect_dots_match<16>();
}

// exp_lanes against the C library's exp (float64: expl in long double, float32: exp in float64),
// rounded to T. Bound: the Taylor terms left out are below 4e-18 (float64) and 5e-9 (float32,
// 0.08 ulp) of the sum; Horner's 13 (7) roundings with |r| <= 0.35 add about one ulp, the product
// by 2^n half of one, the reference's rounding half of one: 4 ulps. Below the lowest argument the
// result is 0 (the true value is below the smallest normal number), above the highest infinite.
template <int Bytes, typename T, typename Wide>
void expect_exp_matches(T lowest, T highest) {
  constexpr int64_t W = kLanes<T, Bytes>;
  std::vector<T> xs;
  for (int i = 0; i <= 20000; ++i) xs.push_back(lowest + (highest - lowest) * static_cast<T>(i) / T(20000));
  for (T x : {T(0), T(-1e-30), T(1e-30), T(-0.34657359), T(0.34657359), T(-1), T(1), T(-30.5), lowest, highest})
    xs.push_back(x);
  while (xs.size() % W) xs.push_back(T(0));
  const T ulp = std::numeric_limits<T>::epsilon();
  for (size_t i = 0; i < xs.size(); i += W) {
    T got[W];
    store(got, exp_lanes<Bytes>(load<Bytes>(xs.data() + i)));
    for (int64_t l = 0; l < W; ++l) {
      const Wide x = xs[i + l], expected = static_cast<T>(std::exp(x));
      ASSERT_LE(std::abs(static_cast<Wide>(got[l]) - expected), 4 * ulp * expected) << "exp(" << x << "), " << Bytes << " bytes";
    }
  }
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> edges = {-inf, lowest - T(1), T(-1e30), highest + T(1), inf, nan, T(0)};
  edges.resize(std::max<size_t>(edges.size(), W), T(0));
  edges.resize((edges.size() + W - 1) / W * W, T(0));
  std::vector<T> got(edges.size());
  for (size_t i = 0; i < edges.size(); i += W) store(got.data() + i, exp_lanes<Bytes>(load<Bytes>(edges.data() + i)));
  EXPECT_EQ(got[0], T(0));
  EXPECT_EQ(got[1], T(0));
  EXPECT_EQ(got[2], T(0));
  EXPECT_EQ(got[3], inf);
  EXPECT_EQ(got[4], inf);
  EXPECT_TRUE(std::isnan(got[5]));
  EXPECT_EQ(got[6], T(1));
}

TEST(ExpLanes, MatchesTheLibraryExpWithinFourUlps) {
  expect_exp_matches<64, double, long double>(-708, 709);
  expect_exp_matches<32, double, long double>(-708, 709);
  expect_exp_matches<16, double, long double>(-708, 709);
  expect_exp_matches<64, float, double>(-87, 88);
  expect_exp_matches<32, float, double>(-87, 88);
  expect_exp_matches<16, float, double>(-87, 88);
}

// transpose into rows ld_out apart (the rest of each row untouched): whole blocks, edges, both.
TEST(StridedTranspose, WritesTheTransposeAndNothingElse) {
  auto g = make_generator(7);
  for (const auto& [n, k] : std::vector<std::array<int64_t, 2>>{{16, 64}, {13, 16}, {64, 5}, {3, 3}}) {
    const at::Tensor b = at::randn({n, k + 3}, g, at::kFloat);
    at::Tensor out = at::full({k, n + 4}, -7.0f, at::kFloat);
    transpose<64>(n, k, b.data_ptr<float>(), k + 3, out.data_ptr<float>(), n + 4);
    EXPECT_TRUE(at::equal(out.narrow(1, 0, n), b.narrow(1, 0, k).t())) << n << " x " << k;
    EXPECT_TRUE(at::equal(out.narrow(1, n, 4), at::full({k, 4}, -7.0f, at::kFloat))) << n << " x " << k;
  }
}

// SPE_KERNEL_ISA caps the kernels' instruction set (ctest runs them under each cap); a value
// that names none is an error that says what is expected.
TEST(KernelInstructionSet, CapComesFromTheEnvironment) {
  const auto cap_for = [](const char* value) {
    ::setenv("SPE_KERNEL_ISA", value, 1);
    return isa_cap();
  };
  EXPECT_EQ(cap_for("avx2"), Isa::avx2);
  EXPECT_EQ(cap_for("baseline"), Isa::baseline);
  EXPECT_EQ(cap_for("avx512"), Isa::avx512);
  EXPECT_EQ(cap_for(""), Isa::avx512);
  try {
    cap_for("sse9");
    ADD_FAILURE() << "SPE_KERNEL_ISA=sse9 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("SPE_KERNEL_ISA=sse9: expected avx512, avx2 or baseline"), std::string::npos)
        << e.what();
  }
  ::unsetenv("SPE_KERNEL_ISA");
  EXPECT_EQ(isa_cap(), Isa::avx512);
}

}  // namespace
}  // namespace spe::kernels::cpu
