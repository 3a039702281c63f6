// Pieces of the fused decoding step (src/kernels/cpu/decoding_step.h) that the decoder tests
// (tests/nn/decoder_test.cpp) cannot reach in 13 positions: the sine oscillators turned position
// after position for thousands of positions (rounding must not pile up), positions that jump, and
// the weight products at sizes that take every path (blocks of outputs and the last ones, whole
// vectors and the scalar tail, runs of outputs split between threads), in float64 against obvious implementations.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "kernels/cpu/decoding_step.h"
#include "spe/random.h"

namespace spe::kernels::cpu {
namespace {

// coefficients (2, F, 2K + 1) of position n computed from the phases.
std::vector<double> exact_coefficients(int64_t features, int64_t sines, const std::vector<double>& frequencies,
                                       const std::vector<double>& offsets, int64_t position) {
  const int64_t row = 2 * sines + 1;
  std::vector<double> out(static_cast<size_t>(2 * features * row));
  for (int side = 0; side < 2; ++side)
    for (int64_t f = 0; f < features; ++f) {
      for (int64_t k = 0; k < sines; ++k) {
        const double phase = 2.0 * M_PI * frequencies[f * sines + k] * static_cast<double>(position) +
                             (side == 0 ? offsets[f * sines + k] : 0.0);
        out[(side * features + f) * row + 2 * k] = std::cos(phase);
        out[(side * features + f) * row + 2 * k + 1] = std::sin(phase);
      }
      out[(side * features + f) * row + 2 * sines] = 1.0;
    }
  return out;
}

TEST(SineOscillators, TurnedPositionAfterPositionStayOnTheExactPhases) {
  const int64_t features = 6, sines = 3;
  const at::Tensor f = at::randn({features * sines}, make_generator(2), at::kDouble).mul(0.3).exp();  // periods ~ 1
  std::vector<double> frequencies(f.data_ptr<double>(), f.data_ptr<double>() + f.numel()), offsets;
  for (int64_t i = 0; i < features * sines; ++i) offsets.push_back(0.1 + 0.7 * static_cast<double>(i));
  SineOscillators oscillators(features, sines, frequencies.data(), offsets.data());
  std::vector<double> got(static_cast<size_t>(2 * features * (2 * sines + 1)));
  const double top_frequency = *std::max_element(frequencies.begin(), frequencies.end());
  // 3,000 positions in order (11 exact restarts), then jumps: far, the next ones, back.
  std::vector<int64_t> positions;
  for (int64_t n = 0; n < 3000; ++n) positions.push_back(n);
  for (int64_t n : {1000003, 1000004, 1000005, 17, 18}) positions.push_back(n);
  for (int64_t n : positions) {
    oscillators.coefficients(n, got.data());
    const std::vector<double> expected = exact_coefficients(features, sines, frequencies, offsets, n);
    // The reference's phase 2 pi f n is itself rounded (half an ulp, 1.1e-16 of it); each of at
    // most 256 turns since the last restart adds a few ulps of the unit circle (4 x 1.1e-16).
    const double bound = 4 * 1.1e-16 * 2.0 * M_PI * top_frequency * static_cast<double>(n) + 256 * 4 * 1.1e-16;
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]));
    ASSERT_LT(worst, bound) << "position " << n;
  }
  // One turn, position 6 reached from position 5, is exact to rounding.
  SineOscillators again(features, sines, frequencies.data(), offsets.data());
  again.coefficients(5, got.data());
  again.coefficients(6, got.data());
  const std::vector<double> at6 = exact_coefficients(features, sines, frequencies, offsets, 6);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], at6[i], 1e-13);
}

TEST(RowsByWeight, EqualsTheLinearLayerOnOneThreadAndSeveral) {
  auto g = make_generator(3);
  for (const auto& [m, k, n] :
       std::vector<std::array<int64_t, 3>>{{1, 128, 512}, {3, 37, 13}, {2, 5, 3}, {1, 16, 9}, {2, 33, 70}})
    for (bool bias : {true, false})
      for (int threads : {1, 2, 3}) {
        const at::Tensor x = at::randn({m, k}, g, at::kDouble), w = at::randn({n, k}, g, at::kDouble);
        const at::Tensor b = bias ? at::randn({n}, g, at::kDouble) : at::Tensor();
        at::Tensor y = at::full({m, n}, std::nan(""), at::kDouble);  // every output must be written
        rows_by_weight<double>(m, k, n, x.data_ptr<double>(), w.data_ptr<double>(),
                               bias ? b.data_ptr<double>() : nullptr, y.data_ptr<double>(), threads);
        EXPECT_LT((y - at::linear(x, w, b)).abs().max().item<double>(), 1e-12)
            << m << " x " << k << " x " << n << ", " << threads << " threads";
      }
}

}  // namespace
}  // namespace spe::kernels::cpu
