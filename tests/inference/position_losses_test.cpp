// The next-token loss by position: every window scored by hand.
#include "spe/inference/position_losses.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "spe/inference/saved_model.h"
#include "support/errors.h"

namespace spe::inference {
namespace {

// Every window of 3 tokens of sequences of 7 and 5 tokens and 2 (too short): windows [0, 3),
// [3, 6) of the first and [0, 3) of the second, each scored by hand.
TEST(PositionLosses, AverageEveryWindowByPosition) {
  train::Config c = train::parse_config("", {"model.kind=language_model", "model.dim=16", "model.heads=2",
                                             "model.layers=1", "model.ffn_dim=32"});
  c.model.transformer().positional().kind(nn::PositionalKind::rotary);  // no random draws to match
  data::DatasetInfo info;
  info.vocab_size = 6;
  info.num_classes = 0;
  data::Dataset d(info);
  d.add(0, {{1, 2, 3, 4, 5, 1, 2}});
  d.add(0, {{5, 4, 3, 2, 1}});
  d.add(0, {{3, 3}});
  nn::Model model = build_model(c, info);
  model->to(at::kDouble);
  const PositionLosses losses = position_losses(*model, d, 3, 2);
  EXPECT_TRUE(model->is_training());  // left as it was
  ASSERT_EQ(losses.windows, 3);
  ASSERT_EQ(losses.loss.size(), 2u);
  model->eval();
  const std::vector<std::vector<int64_t>> windows{{1, 2, 3}, {4, 5, 1}, {5, 4, 3}};
  double expected[2] = {0.0, 0.0};
  for (const auto& w : windows) {
    const at::Tensor logp = model->forward(at::tensor(w, at::kLong).unsqueeze(0), {}).log_softmax(-1)[0];
    for (int64_t n = 0; n < 2; ++n) expected[n] -= logp[n][w[static_cast<size_t>(n) + 1]].item<double>() / 3.0;
  }
  EXPECT_NEAR(losses.loss[0], expected[0], 1e-12);
  EXPECT_NEAR(losses.loss[1], expected[1], 1e-12);
  EXPECT_ERROR_CONTAINS(position_losses(*model, d, 8, 2), "no sequence of the");
}

}  // namespace
}  // namespace spe::inference
