// The models' dropout (src/nn/dropout.h: masks drawn 16 bits per entry) by its statistics, with
// bounds from the sample size: the share dropped, the independence of entries that share a
// 64-bit word and of neighbouring words, the unchanged mean; then its exact values, gradient,
// reproducibility from the seed, and what it leaves alone.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "nn/dropout.h"
#include "spe/nn/transformer.h"

namespace spe::nn {
namespace {

constexpr int64_t kEntries = int64_t{1} << 20;
// Six standard deviations: a correct dropout fails one such check in 5e8.
constexpr double kSds = 6.0;

TEST(Dropout, DropsTheRateOfEntriesIndependently) {
  at::manual_seed(3);
  const at::Tensor ones = at::ones({kEntries});
  for (double p : {0.1, 0.5, 0.9}) {
    const double rate = dropout_rate(p);
    EXPECT_NEAR(rate, p, 1.0 / 131072.0) << "the rate is p rounded to 16 bits";
    const at::Tensor dropped = apply_dropout(ones, p, /*training=*/true).eq(0).to(at::kDouble);  // 0/1 per entry
    const double n = kEntries;
    EXPECT_NEAR(dropped.mean().item<double>(), rate, kSds * std::sqrt(rate * (1 - rate) / n)) << "p " << p;
    // both dropped: the lanes of one word (offset 1), the same lane of the next word (offset 4)
    for (int64_t offset : {1, 2, 3, 4, 5}) {
      const at::Tensor both = dropped.narrow(0, 0, kEntries - offset) * dropped.narrow(0, offset, kEntries - offset);
      const double expected = rate * rate, pairs = n - offset;
      EXPECT_NEAR(both.mean().item<double>(), expected, kSds * std::sqrt(expected * (1 - expected) / pairs))
          << "p " << p << ", entries " << offset << " apart";
    }
  }
}

TEST(Dropout, KeepsTheMeanAndScalesTheKeptEntriesExactly) {
  at::manual_seed(4);
  const double p = 0.3, rate = dropout_rate(p);
  const at::Tensor x = at::rand({kEntries}, at::kDouble) + 0.5;
  const at::Tensor out = apply_dropout(x, p, true);
  const at::Tensor kept = out.ne(0);
  EXPECT_TRUE(at::allclose(out.masked_select(kept), x.masked_select(kept) / (1 - rate), 1e-15, 0));
  // sum(out) / sum(x) has mean 1; each entry's multiplier has variance rate / (1 - rate)
  const double spread = std::sqrt(rate / (1 - rate) * (x * x).sum().item<double>()) / x.sum().item<double>();
  EXPECT_NEAR(out.sum().item<double>() / x.sum().item<double>(), 1.0, kSds * spread);
  // float32 and a non-contiguous input: the same rule
  const at::Tensor t = at::rand({64, 96}).t();
  const at::Tensor out32 = apply_dropout(t, p, true);
  const at::Tensor kept32 = out32.ne(0);
  EXPECT_TRUE(at::allclose(out32.masked_select(kept32), t.masked_select(kept32) / static_cast<float>(1 - rate)));
}

TEST(Dropout, GradientIsTheMaskAndTheSeedReproducesIt) {
  at::Tensor x = at::rand({4, 33}, at::kDouble).add_(1).requires_grad_();
  at::manual_seed(9);
  const at::Tensor out = apply_dropout(x, 0.25, true);
  out.sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), out.detach() / x.detach(), 1e-15, 0));
  at::manual_seed(9);
  EXPECT_TRUE(at::equal(apply_dropout(x.detach(), 0.25, true), out.detach()));
  at::manual_seed(10);
  EXPECT_FALSE(at::equal(apply_dropout(x.detach(), 0.25, true), out.detach()));
}

TEST(Dropout, LeavesTheInputAloneOutOfTrainingAndAtZero) {
  const at::Tensor x = at::rand({5, 7});
  EXPECT_TRUE(apply_dropout(x, 0.5, /*training=*/false).is_same(x));
  EXPECT_TRUE(apply_dropout(x, 0.0, true).is_same(x));
  EXPECT_THROW(apply_dropout(x, 1.0, true), c10::Error);
  EXPECT_THROW(apply_dropout(x, -0.1, true), c10::Error);
}

// The model's blocks drop with it: in training two forward passes differ, in eval they agree.
TEST(Dropout, TheModelDropsInTrainingOnly) {
  TransformerOptions o(20);
  o.dim(16).heads(2).layers(1).ffn_dim(24).dropout(0.5);
  Transformer model(o);
  const at::Tensor tokens = at::randint(1, 20, {2, 9}, at::kLong);
  model->train();
  EXPECT_FALSE(at::allclose(model->forward(tokens), model->forward(tokens)));
  model->eval();
  EXPECT_TRUE(at::equal(model->forward(tokens), model->forward(tokens)));
}

}  // namespace
}  // namespace spe::nn
