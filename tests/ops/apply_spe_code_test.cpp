// The fused filtering by a materialised SPE code against explicit float64 loops and ATen's einsum
// (float32 at a text model's sizes), its backward against finite differences and against autograd
// of the einsum (with a code longer than the sequence), and its errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "spe/ops/apply_spe_code.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

// out[b, n, h, r] = sum_d x[b, n, h, d] code[n, h, d, r], one term at a time.
at::Tensor apply_loops(const at::Tensor& x, const at::Tensor& code) {
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2), D = x.size(3), R = code.size(3);
  auto xa = x.accessor<double, 4>();
  auto ca = code.accessor<double, 4>();
  at::Tensor out = at::zeros({B, N, H, R}, at::kDouble);
  auto o = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t d = 0; d < D; ++d) o[b][n][h][r] += xa[b][n][h][d] * ca[n][h][d][r];
  return out;
}

at::Tensor apply_einsum(const at::Tensor& x, const at::Tensor& code) {
  return at::einsum("bnhd,nhdr->bnhr", {x, code.narrow(0, 0, x.size(1))});
}

TEST(FusedApplySPECode, MatchesTheLoops) {
  auto g = make_generator(21);
  // {B, N, H, D, R}: batches past a block of rows (6) and under it, R past and under a vector
  for (const auto& [B, N, H, D, R] : std::vector<std::array<int64_t, 5>>{
           {8, 5, 2, 3, 33}, {1, 1, 1, 1, 1}, {7, 3, 3, 5, 4}, {13, 2, 1, 17, 20}}) {
    const at::Tensor x = at::randn({B, N, H, D}, g, at::kDouble), code = at::randn({N, H, D, R}, g, at::kDouble);
    EXPECT_LT(testing::relative_error(ops::apply_spe_code(x, code), apply_loops(x, code)), 1e-12)
        << "B " << B << " N " << N << " H " << H << " D " << D << " R " << R;
  }
}

TEST(FusedApplySPECode, Float32MatchesEinsumAtATextModelsSizes) {
  auto g = make_generator(22);
  const at::Tensor x = at::randn({8, 100, 4, 16}, g, at::kFloat), code = at::randn({120, 4, 16, 32}, g, at::kFloat);
  EXPECT_LT(
      testing::relative_error(ops::apply_spe_code(x, code), apply_einsum(x.to(at::kDouble), code.to(at::kDouble))),
      1e-5);
}

TEST(FusedApplySPECode, BackwardMatchesFiniteDifferences) {
  auto g = make_generator(23);
  at::Tensor x = at::randn({3, 4, 2, 3}, g, at::kDouble).requires_grad_();
  at::Tensor code = at::randn({5, 2, 3, 2}, g, at::kDouble).requires_grad_();
  const at::Tensor weights = at::randn({3, 4, 2, 2}, g, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::apply_spe_code(x, code) * weights).sum(); },
                                  {{"x", x}, {"code", code}});
}

TEST(FusedApplySPECode, BackwardMatchesAutogradOfEinsum) {
  auto g = make_generator(24);
  const at::Tensor x0 = at::randn({9, 30, 3, 5}, g, at::kDouble), code0 = at::randn({40, 3, 5, 19}, g, at::kDouble);
  const at::Tensor weights = at::randn({9, 30, 3, 19}, g, at::kDouble);
  std::array<std::array<at::Tensor, 2>, 2> grads;
  for (int way = 0; way < 2; ++way) {
    at::Tensor x = x0.clone().requires_grad_(), code = code0.clone().requires_grad_();
    ((way == 0 ? ops::apply_spe_code(x, code) : apply_einsum(x, code)) * weights).sum().backward();
    grads[way] = {x.grad(), code.grad()};
  }
  EXPECT_LT(testing::relative_error(grads[0][0], grads[1][0]), 1e-12) << "x";
  EXPECT_LT(testing::relative_error(grads[0][1], grads[1][1]), 1e-12) << "code (its rows past N get zeros)";
  // one input alone needing its gradient
  at::Tensor code = code0.clone().requires_grad_();
  (ops::apply_spe_code(x0, code) * weights).sum().backward();
  EXPECT_LT(testing::relative_error(code.grad(), grads[1][1]), 1e-12);
}

TEST(FusedApplySPECode, EmptyInputsGiveEmptyOrZeroOutputs) {
  const at::Tensor code = at::randn({4, 2, 3, 5}, at::kDouble);
  EXPECT_EQ(ops::apply_spe_code(at::randn({0, 4, 2, 3}, at::kDouble), code).sizes(), at::IntArrayRef({0, 4, 2, 5}));
  EXPECT_EQ(ops::apply_spe_code(at::randn({2, 0, 2, 3}, at::kDouble), code).sizes(), at::IntArrayRef({2, 0, 2, 5}));
  const at::Tensor no_features = ops::apply_spe_code(at::randn({2, 4, 2, 0}, at::kDouble), code.narrow(2, 0, 0));
  EXPECT_EQ(no_features.sizes(), at::IntArrayRef({2, 4, 2, 5}));
  EXPECT_EQ(no_features.abs().sum().item<double>(), 0.0);
}

TEST(FusedApplySPECode, BadInputsAreClearErrors) {
  const at::Tensor x = at::randn({2, 5, 3, 4}, at::kDouble), code = at::randn({6, 3, 4, 7}, at::kDouble);
  EXPECT_ERROR_CONTAINS(ops::apply_spe_code(x.flatten(2), code), "expected x (B, N, H, D) and code (N, H, D, R)");
  EXPECT_ERROR_CONTAINS(ops::apply_spe_code(x, code.narrow(2, 0, 3)), "the code has (H, D) = (3, 3)");
  EXPECT_ERROR_CONTAINS(ops::apply_spe_code(x, code.narrow(0, 0, 4)), "5 positions exceed the code's 4");
  EXPECT_ERROR_CONTAINS(ops::apply_spe_code(x, code.to(at::kFloat)), "share a dtype");
  EXPECT_ERROR_CONTAINS(ops::apply_spe_code(x.to(at::kLong), code.to(at::kLong)), "float32 or float64");
}

}  // namespace
}  // namespace spe
