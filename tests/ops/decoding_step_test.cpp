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
#include <string>
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

// softmax_attention_step against the sum written out (float64, then float32): lengths that end
// on and inside a tile and a vector, keys and values of a capacity larger than the length, value
// widths with and without a scalar tail and with blocks of 1 to 4 vectors on every instruction set, every bias (none, decay, a clipped one with clips
// shorter and longer than the length) and the weights summed per lag.
template <typename T>
void expect_softmax_step_matches(at::ScalarType dtype, double tolerance) {
  auto g = make_generator(11);
  const int64_t B = 2, H = 3, P = 5, capacity = 64;
  for (int64_t Dv : {7, 32, 56})
    for (int64_t length : {1, 2, 15, 16, 17, 33, 64})
      for (const char* kind : {"none", "decay", "clipped", "decay+clipped"})
        for (int64_t clip : {3, 40}) {
          const bool decay = std::string(kind).find("decay") != std::string::npos;
          const bool clipped = std::string(kind).find("clipped") != std::string::npos;
          const at::Tensor q = at::randn({B, H, P}, g, at::kDouble), keys = at::randn({B, H, length, P}, g, at::kDouble);
          const at::Tensor values = at::randn({B, H, capacity, Dv}, g, at::kDouble);
          const at::Tensor log_decay = -at::rand({H}, g, at::kDouble), bias = at::randn({B, H, clip + 1}, g, at::kDouble);
          const double scale = 0.7;
          // the obvious sums, in float64
          at::Tensor expected = at::zeros({B, H, Dv}, at::kDouble), expected_lags = at::zeros({B, H, clip + 1}, at::kDouble);
          for (int64_t b = 0; b < B; ++b)
            for (int64_t h = 0; h < H; ++h) {
              std::vector<double> s;
              for (int64_t j = 0; j < length; ++j) {
                const int64_t lag = length - 1 - j;
                double score = scale * (q[b][h] * keys[b][h][j]).sum().item<double>();
                if (decay) score += log_decay[h].item<double>() * static_cast<double>(lag);
                if (clipped) score += bias[b][h][std::min(lag, clip)].item<double>();
                s.push_back(score);
              }
              const double top = *std::max_element(s.begin(), s.end());
              double total = 0;
              for (double& x : s) total += (x = std::exp(x - top));
              for (int64_t j = 0; j < length; ++j) {
                expected[b][h] += s[j] / total * values[b][h][j];
                expected_lags[b][h][std::min(length - 1 - j, clip)] += s[j] / total;
              }
            }
          // keys into their tiles, zeros past the length
          at::Tensor tiles = at::zeros({B, H, capacity * P}, dtype);
          const at::Tensor keys_t = keys.to(dtype);
          for (int64_t bh = 0; bh < B * H; ++bh)
            for (int64_t j = 0; j < length; ++j)
              for (int64_t p = 0; p < P; ++p)
                tiles.view({B * H, capacity * P})[bh][key_offset(j, p, P)] = keys_t.view({B * H, length, P})[bh][j][p];
          const at::Tensor q_t = q.to(dtype), values_t = values.to(dtype), decay_t = log_decay.to(dtype),
                           bias_t = bias.to(dtype);
          at::Tensor out = at::full({B, H, Dv}, std::nan(""), dtype), lags = at::full({B, H, clip + 1}, std::nan(""), dtype);
          std::vector<T> scores(capacity);
          const LagBias<T> lag_bias{decay ? decay_t.data_ptr<T>() : nullptr, clipped ? bias_t.data_ptr<T>() : nullptr,
                                    clip, lags.data_ptr<T>()};
          softmax_attention_step<T>(B, H, P, Dv, length, capacity, q_t.data_ptr<T>(), tiles.data_ptr<T>(),
                                    values_t.data_ptr<T>(), scale, lag_bias, scores.data(), out.data_ptr<T>());
          const std::string where = std::string(kind) + ", length " + std::to_string(length) + ", Dv " +
                                    std::to_string(Dv) + ", clip " + std::to_string(clip);
          EXPECT_LT((out.to(at::kDouble) - expected).abs().max().item<double>(), tolerance) << where;
          EXPECT_LT((lags.to(at::kDouble) - expected_lags).abs().max().item<double>(), tolerance) << where;
        }
}

TEST(SoftmaxAttentionStep, MatchesTheSumWrittenOutInFloat64) { expect_softmax_step_matches<double>(at::kDouble, 1e-12); }

TEST(SoftmaxAttentionStep, MatchesTheSumWrittenOutInFloat32) { expect_softmax_step_matches<float>(at::kFloat, 2e-5); }

}  // namespace
}  // namespace spe::kernels::cpu
