// The position probes are learnable and need position: a small softmax + rotary classifier
// solves the order probe in a few hundred steps, and the same model without positions stays at
// chance exactly: with mean pooling and no position it is invariant to permutations of its
// input, so it answers an example and the example with its markers swapped alike, and one of
// the two answers is wrong.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <numeric>

#include "spe/data/batch.h"
#include "spe/data/probe.h"
#include "spe/data/text.h"
#include "spe/nn/model.h"

namespace spe::nn {
namespace {

constexpr int64_t kProbeLength = 12;

Model small_classifier(PositionalKind pe) {
  TransformerOptions o(data::kByteVocabSize);
  o.dim(32).heads(2).layers(2).ffn_dim(64).dropout(0.0);
  o.positional().kind(pe);
  o.attention().kind(AttentionKind::softmax);
  at::manual_seed(1);
  Model model(ModelOptions(ModelKind::classifier, o).num_classes(2));
  model->to(at::kDouble);
  return model;
}

void train(Model& model, const data::Dataset& train_set, int64_t steps) {
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
  data::EpochSampler sampler(train_set.size(), 5);
  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    const data::Batch batch = data::make_batch(train_set, sampler.next(32), kProbeLength);
    const at::Tensor logits = model->forward(batch.tokens, batch.padding);
    const at::Tensor loss = at::nll_loss(at::log_softmax(logits, -1), batch.labels);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  }
  model->eval();
}

// Accuracy on the test examples and on each with its 'a' and 'b' exchanged (label flipped).
double accuracy_on_swapped_pairs(Model& model, const data::Dataset& test_set) {
  std::vector<int64_t> all(static_cast<size_t>(test_set.size()));
  std::iota(all.begin(), all.end(), 0);
  const data::Batch batch = data::make_batch(test_set, all, kProbeLength);
  const uint16_t a = 'a' + 1, b = 'b' + 1;
  const at::Tensor swapped = at::where(batch.tokens == a, b, at::where(batch.tokens == b, a, batch.tokens));
  at::NoGradGuard no_grad;
  const at::Tensor right = (model->forward(batch.tokens, batch.padding).argmax(-1) == batch.labels).sum() +
                           (model->forward(swapped, batch.padding).argmax(-1) == 1 - batch.labels).sum();
  return right.item<double>() / (2.0 * static_cast<double>(test_set.size()));
}

TEST(ProbeLearning, RotarySolvesTheOrderProbeAndNoPositionStaysAtChance) {
  const data::ProbeOptions order{data::ProbeKind::order, kProbeLength, 3};
  const data::Dataset train_set = data::make_probe_dataset(order, 2000, 1, "train");
  const data::Dataset test_set = data::make_probe_dataset(order, 500, 1, "test");
  Model rotary = small_classifier(PositionalKind::rotary);
  train(rotary, train_set, 300);
  EXPECT_GE(accuracy_on_swapped_pairs(rotary, test_set), 0.95);
  Model none = small_classifier(PositionalKind::none);
  train(none, train_set, 300);
  // Exactly one of each pair is right, whatever was learned (up to ties of the two logits).
  EXPECT_NEAR(accuracy_on_swapped_pairs(none, test_set), 0.5, 0.01);
}

}  // namespace
}  // namespace spe::nn
