// `spe bench train`: whole training steps of a model built from a configuration (forward, loss,
// backward, the trainer's AdamW step) on random tokens of a fixed length: tokens per second and
// peak memory of what a user's training run does per step, data loading aside.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.h"
#include "measure.h"
#include "spe/inference/saved_model.h"
#include "spe/random.h"
#include "spe/train/trainer.h"
#include "spe/util/memory.h"
#include "spe/util/threads.h"

namespace spe::cli {
namespace {

struct TrainBenchArgs {
  std::string config = "configs/music/lm.yaml";
  std::vector<std::string> overrides;
  int64_t batch = 1, length = 2048, vocab = 512, classes = 10;
  std::vector<int64_t> grid;  // (rows, columns) of an image's sequences, for 2-D convSPE
  int repeats = 5;
};

// One optimizer step on fixed random tokens: a language model predicts each next token, a
// classifier a random label per sequence, a dual encoder a random label per pair of sequences.
// after_forward, when set, runs between the loss and the backward pass (while autograd holds what
// the backward needs).
std::function<void()> training_step(nn::Model model, torch::optim::AdamW& optimizer, const TrainBenchArgs& a,
                                    std::function<void()> after_forward = {}) {
  auto g = make_generator(1);
  const bool lm = model->options.kind() == nn::ModelKind::language_model;
  const bool pairs = model->options.kind() == nn::ModelKind::dual_encoder;
  const at::Tensor tokens = at::randint(1, a.vocab, {a.batch, a.length + (lm ? 1 : 0)}, g, at::kLong);
  const at::Tensor inputs = lm ? tokens.narrow(1, 0, a.length) : tokens;
  const at::Tensor second = pairs ? at::randint(1, a.vocab, {a.batch, a.length}, g, at::kLong) : at::Tensor();
  const at::Tensor targets = lm ? tokens.narrow(1, 1, a.length) : at::randint(0, a.classes, {a.batch}, g, at::kLong);
  const at::Tensor padding = at::ones({a.batch, a.length}, at::kBool);
  return [model, &optimizer, inputs, second, targets, padding, after_forward]() mutable {
    optimizer.zero_grad();
    const at::Tensor logits = second.defined() ? model->forward(inputs, padding, second, padding)
                                               : model->forward(inputs, padding);  // (B, N, V) or (B, C)
    const at::Tensor loss = at::cross_entropy_loss(logits.flatten(0, logits.dim() - 2), targets.flatten());
    if (after_forward) after_forward();
    loss.backward();
    optimizer.step();
  };
}

// MiB of float32 values in the tensors.
double mib_of(int64_t values) { return static_cast<double>(values) * 4.0 / (1 << 20); }

// What a step must hold at least, beside the parameters: their gradients and AdamW's two moments.
std::pair<double, double> gradient_and_optimizer_mib(const nn::Model& model, torch::optim::AdamW& optimizer) {
  int64_t gradients = 0, moments = 0;
  for (const at::Tensor& p : model->parameters()) gradients += p.numel();
  for (const auto& entry : optimizer.state()) {
    const auto& state = static_cast<const torch::optim::AdamWParamState&>(*entry.second);
    moments += state.exp_avg().numel() + state.exp_avg_sq().numel();
  }
  return {mib_of(gradients), mib_of(moments)};
}

void bench_train(const TrainBenchArgs& a) {
  train::Config config = train::load_config(a.config, a.overrides);
  data::DatasetInfo info;
  info.task = a.grid.empty() ? "random tokens (--grid ROWS COLUMNS lays them on an image's grid)" : "random tokens";
  info.vocab_size = a.vocab;
  info.num_classes = a.classes;
  info.grid = a.grid;
  info.fields = config.model.kind() == nn::ModelKind::dual_encoder ? 2 : 1;  // pairs of sequences
  if (!a.grid.empty() && a.length > a.grid[0] * a.grid[1])
    throw std::invalid_argument(fmt::format("spe bench train: --length {} does not fit the {} x {} grid", a.length,
                                            a.grid[0], a.grid[1]));
  nn::Model model = inference::build_model(config, info);
  model->train();
  const int64_t parameters = nn::parameter_count(*model);
  const double tokens = static_cast<double>(a.batch * a.length * info.fields);  // per step, over both of a pair
  choose_step_threads(step_flops(parameters, tokens, true),
                      nn::softmax_attention(config.model));  // as spe train
  torch::optim::AdamW optimizer = train::make_optimizer(*model, config.train);
  // The first step's peak (it allocates the optimizer's state), measured as peak_memory_mib does,
  // with freed blocks returned to the system, and what the forward leaves held for the backward
  // (the activations autograd keeps); then the steps timed as spe train runs them.
  double start = 0.0, kept = 0.0;
  const double peak = peak_memory_mib([&] {
    start = resident_mib();
    training_step(model, optimizer, a, [&] { kept = std::max(0.0, resident_mib() - start); })();
  });
  const auto [gradients, moments] = gradient_and_optimizer_mib(model, optimizer);
  retain_freed_memory();
  const Timing timing = time_median(training_step(model, optimizer, a), a.repeats);
  const auto& t = model->options.transformer();
  std::cout << fmt::format(
      "{{\"scenario\": \"train\", \"model\": \"{}\", \"layers\": {}, \"dim\": {}, \"heads\": {}, \"ffn_dim\": {}, "
      "\"attention\": \"{}\", \"positional\": \"{}\", \"causal\": {}, \"parameters\": {}, \"B\": {}, \"N\": {}, "
      "\"median_step_s\": {:.4g}, \"tokens_per_s\": {:.1f}, \"first_step_peak_mib\": {:.1f}, \"parameters_mib\": {:.1f}, "
      "\"gradients_mib\": {:.1f}, \"optimizer_state_mib\": {:.1f}, \"kept_for_backward_mib\": {:.1f}, \"threads\": {}}}\n",
      choice_name(model->options.kind(), nn::kModelKinds), t.layers(), t.dim(), t.heads(), t.ffn_dim(),
      choice_name(t.attention().kind(), nn::kAttentionKinds), choice_name(t.positional().kind(), nn::kPositionalKinds),
      t.causal() ? "true" : "false", parameters, a.batch, a.length, timing.median_s, tokens / timing.median_s, peak,
      mib_of(parameters), gradients, moments, kept,
      at::get_num_threads());
}

}  // namespace

void add_bench_train_scenario(CLI::App& bench) {
  auto a = std::make_shared<TrainBenchArgs>();
  auto* sub = bench.add_subcommand("train", "whole training steps of a configured model on random tokens (pairs of "
                                            "sequences for a dual encoder): tokens/s, peak memory");
  sub->add_option("--config", a->config, "the model and optimizer of this configuration")->capture_default_str();
  sub->add_option("--set", a->overrides, "override one key, e.g. --set model.layers=4 (repeatable)")->take_all();
  sub->add_option("--batch", a->batch, "sequences per step")->check(positive_integer())->capture_default_str();
  sub->add_option("--length", a->length, "tokens per sequence")->check(positive_integer())->capture_default_str();
  sub->add_option("--vocab", a->vocab, "vocabulary (token ids 1 .. vocab - 1)")->check(CLI::Range(int64_t{2}, int64_t{1} << 24))->capture_default_str();
  sub->add_option("--classes", a->classes, "classes of a classifier")->check(positive_integer())->capture_default_str();
  sub->add_option("--grid", a->grid, "ROWS COLUMNS: the sequences are images of this grid (2-D convSPE)")
      ->expected(2)
      ->check(positive_integer());
  sub->add_option("--repeats", a->repeats, "timed steps (median reported; one more warms up)")->check(positive_integer())->capture_default_str();
  sub->callback([a] { bench_train(*a); });
}

}  // namespace spe::cli
