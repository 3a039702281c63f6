// The fused depthwise correlation (convSPE's filter on its noise, positions first), over sequences
// and grids, against explicit float64 loops over sizes that split into full and partial chunks
// (256 outputs) and blocks of rows, against LibTorch's grouped conv1d and conv2d in float32 at
// convSPE's sizes, its backward against finite differences and against autograd of conv1d and
// conv2d, and its errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "spe/ops/depthwise_correlation.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

// out[t, c, r] = sum_j w[c, j] x[t + j, c, r], one term at a time.
at::Tensor correlation_loops(const at::Tensor& x, const at::Tensor& w) {
  const int64_t X = x.size(0), C = x.size(1), R = x.size(2), S = w.size(1);
  auto xa = x.accessor<double, 3>();
  auto wa = w.accessor<double, 2>();
  at::Tensor out = at::zeros({X - S + 1, C, R}, at::kDouble);
  auto o = out.accessor<double, 3>();
  for (int64_t t = 0; t + S <= X; ++t)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < S; ++j) o[t][c][r] += wa[c][j] * xa[t + j][c][r];
  return out;
}

// out[t1, t2, c, r] = sum_{a, j} w[c, a, j] x[t1 + a, t2 + j, c, r], one term at a time.
at::Tensor correlation_loops_2d(const at::Tensor& x, const at::Tensor& w) {
  const int64_t X1 = x.size(0), X2 = x.size(1), C = x.size(2), R = x.size(3), S1 = w.size(1), S2 = w.size(2);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 3>();
  at::Tensor out = at::zeros({X1 - S1 + 1, X2 - S2 + 1, C, R}, at::kDouble);
  auto o = out.accessor<double, 4>();
  for (int64_t t1 = 0; t1 + S1 <= X1; ++t1)
    for (int64_t t2 = 0; t2 + S2 <= X2; ++t2)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t a = 0; a < S1; ++a)
            for (int64_t j = 0; j < S2; ++j) o[t1][t2][c][r] += wa[c][a][j] * xa[t1 + a][t2 + j][c][r];
  return out;
}

// The same with at::conv2d (groups = C) on the (R, C, X1, X2) layout, back in (X1', X2', C, R).
at::Tensor correlation_conv2d(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor no_bias;
  return at::conv2d(x.permute({3, 2, 0, 1}), w.unsqueeze(1), no_bias, at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0},
                    at::IntArrayRef{1, 1}, w.size(0))
      .permute({2, 3, 1, 0});
}

// The same with at::conv1d (groups = C) on the (R, C, X) layout, back in (X - S + 1, C, R).
at::Tensor correlation_conv1d(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor no_bias;
  return at::conv1d(x.permute({2, 1, 0}), w.unsqueeze(1), no_bias, at::IntArrayRef{1}, at::IntArrayRef{0},
                    at::IntArrayRef{1}, w.size(0))
      .permute({2, 1, 0});
}

TEST(FusedDepthwiseCorrelation, MatchesTheLoopsAcrossChunksAndBlocks) {
  auto g = make_generator(11);
  // {X, C, R, S}: 300 outputs (a chunk of 256 and one of 44), R of one partial vector, R past a
  // vector, a single output (S = X), single taps, outputs fewer than a block of rows
  for (const auto& [X, C, R, S] : std::vector<std::array<int64_t, 4>>{
           {304, 3, 5, 5}, {40, 2, 33, 17}, {8, 2, 3, 8}, {10, 1, 1, 1}, {9, 2, 17, 5}, {600, 1, 2, 40}}) {
    const at::Tensor x = at::randn({X, C, R}, g, at::kDouble), w = at::randn({C, S}, g, at::kDouble);
    EXPECT_LT(testing::relative_error(ops::depthwise_correlation(x, w), correlation_loops(x, w)), 1e-12)
        << "X " << X << " C " << C << " R " << R << " S " << S;
  }
}

TEST(FusedDepthwiseCorrelation, GridsMatchTheLoops) {
  auto g = make_generator(15);
  // {X1, X2, C, R, S1, S2}: rows of 270 outputs (a chunk and a part), square and oblong filters,
  // one output row, single taps
  for (const auto& [X1, X2, C, R, S1, S2] : std::vector<std::array<int64_t, 6>>{
           {4, 274, 2, 3, 2, 5}, {7, 9, 3, 17, 3, 3}, {3, 5, 1, 2, 3, 1}, {5, 6, 2, 1, 1, 2}}) {
    const at::Tensor x = at::randn({X1, X2, C, R}, g, at::kDouble), w = at::randn({C, S1, S2}, g, at::kDouble);
    EXPECT_LT(testing::relative_error(ops::depthwise_correlation(x, w), correlation_loops_2d(x, w)), 1e-12)
        << "X " << X1 << " x " << X2 << " C " << C << " R " << R << " S " << S1 << " x " << S2;
  }
  // float32 against conv2d at an image's code: 28 x 28 positions, S 9, R 32
  const at::Tensor x = at::randn({36, 36, 3, 32}, g, at::kFloat), w = at::rand({3, 9, 9}, g, at::kFloat) / 8;
  EXPECT_LT(testing::relative_error(ops::depthwise_correlation(x, w),
                                    correlation_conv2d(x.to(at::kDouble), w.to(at::kDouble))),
            1e-5);
}

TEST(FusedDepthwiseCorrelation, Float32MatchesConv1dAtConvSPESizes) {
  auto g = make_generator(12);
  // a text model's code: H D = 64 channels (4 of them here), R 32, S 128, 300 positions
  const at::Tensor x = at::randn({300 + 127, 4, 32}, g, at::kFloat), w = at::rand({4, 128}, g, at::kFloat) / 8;
  const at::Tensor want = correlation_conv1d(x.to(at::kDouble), w.to(at::kDouble));
  EXPECT_LT(testing::relative_error(ops::depthwise_correlation(x, w), want), 1e-5);
}

TEST(FusedDepthwiseCorrelation, BackwardMatchesFiniteDifferences) {
  auto g = make_generator(13);
  at::Tensor x = at::randn({9, 2, 3}, g, at::kDouble).requires_grad_();
  at::Tensor w = at::randn({2, 4}, g, at::kDouble).requires_grad_();
  const at::Tensor weights = at::randn({6, 2, 3}, g, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::depthwise_correlation(x, w) * weights).sum(); },
                                  {{"x", x}, {"filters", w}});
  at::Tensor grid = at::randn({4, 5, 2, 2}, g, at::kDouble).requires_grad_();
  at::Tensor filters = at::randn({2, 2, 3}, g, at::kDouble).requires_grad_();
  const at::Tensor grid_weights = at::randn({3, 3, 2, 2}, g, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::depthwise_correlation(grid, filters) * grid_weights).sum(); },
                                  {{"grid x", grid}, {"grid filters", filters}});
}

TEST(FusedDepthwiseCorrelation, BackwardMatchesAutogradOfConv1dAcrossChunks) {
  auto g = make_generator(14);
  const at::Tensor x0 = at::randn({300 + 20, 3, 7}, g, at::kDouble), w0 = at::randn({3, 21}, g, at::kDouble);
  const at::Tensor weights = at::randn({300, 3, 7}, g, at::kDouble);
  std::array<std::array<at::Tensor, 2>, 2> grads;
  for (int way = 0; way < 2; ++way) {
    at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
    const at::Tensor out = way == 0 ? ops::depthwise_correlation(x, w) : correlation_conv1d(x, w);
    (out * weights).sum().backward();
    grads[way] = {x.grad(), w.grad()};
  }
  EXPECT_LT(testing::relative_error(grads[0][0], grads[1][0]), 1e-12) << "x";
  EXPECT_LT(testing::relative_error(grads[0][1], grads[1][1]), 1e-12) << "filters";
  // the noise of a code needs no gradient: the filters' alone is computed
  at::Tensor w = w0.clone().requires_grad_();
  (ops::depthwise_correlation(x0, w) * weights).sum().backward();
  EXPECT_LT(testing::relative_error(w.grad(), grads[1][1]), 1e-12);
}

TEST(FusedDepthwiseCorrelation, GridBackwardMatchesAutogradOfConv2d) {
  auto g = make_generator(16);
  const at::Tensor x0 = at::randn({9, 270, 2, 5}, g, at::kDouble), w0 = at::randn({2, 4, 7}, g, at::kDouble);
  const at::Tensor weights = at::randn({6, 264, 2, 5}, g, at::kDouble);
  std::array<std::array<at::Tensor, 2>, 2> grads;
  for (int way = 0; way < 2; ++way) {
    at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
    ((way == 0 ? ops::depthwise_correlation(x, w) : correlation_conv2d(x, w)) * weights).sum().backward();
    grads[way] = {x.grad(), w.grad()};
  }
  EXPECT_LT(testing::relative_error(grads[0][0], grads[1][0]), 1e-12) << "x";
  EXPECT_LT(testing::relative_error(grads[0][1], grads[1][1]), 1e-12) << "filters";
}

TEST(FusedDepthwiseCorrelation, EmptyChannelsOrRealizationsGiveEmptyOutputs) {
  EXPECT_EQ(ops::depthwise_correlation(at::randn({10, 0, 4}, at::kDouble), at::randn({0, 5}, at::kDouble)).sizes(),
            at::IntArrayRef({6, 0, 4}));
  EXPECT_EQ(ops::depthwise_correlation(at::randn({6, 7, 3, 0}, at::kDouble), at::randn({3, 2, 4}, at::kDouble)).sizes(),
            at::IntArrayRef({5, 4, 3, 0}));
}

TEST(FusedDepthwiseCorrelation, BadInputsAreClearErrors) {
  const at::Tensor x = at::randn({10, 3, 4}, at::kDouble), w = at::randn({3, 5}, at::kDouble);
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x.flatten(1), w), "expected x (X, C, R) and filters (C, S)");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x.unsqueeze(0), w), "or x (X1, X2, C, R) and filters (C, S1, S2)");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x, w.narrow(0, 0, 2)), "one filter per channel");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x.narrow(0, 0, 4), w), "between 1 and the extent of x, 4");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x.unsqueeze(0), w.unsqueeze(1).expand({3, 2, 5})),
                        "length 2 along positional axis 0 must be between 1 and the extent of x, 1");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x, w.narrow(1, 0, 0)), "between 1 and the extent");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x, w.to(at::kFloat)), "share a dtype");
  EXPECT_ERROR_CONTAINS(ops::depthwise_correlation(x.to(at::kLong), w.to(at::kLong)), "float32 or float64");
}

}  // namespace
}  // namespace spe
