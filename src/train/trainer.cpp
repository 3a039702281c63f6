#include "spe/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "spe/inference/saved_model.h"
#include "spe/train/checkpoint.h"
#include "spe/util/files.h"
#include "spe/util/memory.h"

namespace spe::train {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Runs `body` with the global RNG seeded from `seed`, then puts the RNG back as it was.
template <class F>
void with_seeded_rng(uint64_t seed, F&& body) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  at::Tensor saved;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    saved = generator.get_state();
    generator.set_current_seed(seed);
  }
  body();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(saved);
}

// The progress line on stderr: redrawn in place on a terminal, one line per log otherwise.
class ProgressLine {
 public:
  // A silent line prints nothing at all (the ranks other than 0 of a data-parallel run).
  ProgressLine(int64_t total_steps, bool enabled, bool silent = false)
      : total_(total_steps), enabled_(enabled && !silent), silent_(silent), tty_(isatty(2) != 0) {}
  void show(int64_t step, double loss, double accuracy, double steps_per_s, double tokens_per_s, bool logged) {
    if (!enabled_ || (!tty_ && !logged)) return;
    const double fraction = static_cast<double>(step) / static_cast<double>(total_);
    const int width = 24, filled = static_cast<int>(fraction * width);
    const std::string bar = std::string(static_cast<size_t>(filled), '=') + std::string(static_cast<size_t>(width - filled), ' ');
    const std::string line = fmt::format(
        "step {}/{} [{}] {:3.0f}%  loss {:.4f}  acc {:.3f}  {:.2f} steps/s  {:.0f} tokens/s  ETA {}", step, total_, bar,
        100 * fraction, loss, accuracy, steps_per_s, tokens_per_s,
        format_duration(static_cast<double>(total_ - step) / steps_per_s));
    std::cerr << (tty_ ? "\r" + line + "\033[K" : line + "\n") << std::flush;
  }
  // Messages (start, evaluations, the end) are printed with or without the progress line.
  void message(const std::string& text) {
    if (silent_) return;
    std::cerr << (enabled_ && tty_ ? "\r\033[K" : "") << text << "\n" << std::flush;
  }

 private:
  int64_t total_;
  bool enabled_, silent_, tty_;
};

// Appends JSON lines; on resume keeps only the lines up to the checkpoint's step.
class MetricsFile {
 public:
  MetricsFile(const std::string& path, int64_t keep_until_step) : path_(path) {
    std::string kept;
    if (keep_until_step > 0) {
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);) {
        const auto record = nlohmann::json::parse(line, nullptr, false);
        if (!record.is_discarded() && record.value("step", int64_t{-1}) <= keep_until_step) kept += line + "\n";
      }
    }
    write_file_atomically(path, kept);
    file_ = std::fopen(path.c_str(), "a");
    if (!file_) throw std::runtime_error("cannot append to '" + path + "'");
  }
  ~MetricsFile() { std::fclose(file_); }
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;
  void write(const nlohmann::ordered_json& record) {
    const std::string line = record.dump() + "\n";
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
      throw std::runtime_error("cannot write to '" + path_ + "'");
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

data::Dataset load_split(const Config& config, const std::string& split) {
  const std::string path = data::split_path(config.data.dir, split);
  if (access(path.c_str(), F_OK) != 0)
    throw std::runtime_error(fmt::format("no {} split at '{}': prepare the data with `spe data {}` (data.dir is '{}')",
                                         split, path, config.task, config.data.dir));
  return data::Dataset::load(path);
}

void check_same_task(const data::DatasetInfo& a, const data::DatasetInfo& b) {
  if (!data::same_model_inputs(a, b))
    throw std::runtime_error(fmt::format("the {} and {} splits describe different tasks (vocabulary {} vs {}, "
                                         "classes {} vs {}); prepare them together with `spe data`",
                                         a.split, b.split, a.vocab_size, b.vocab_size, a.num_classes, b.num_classes));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

double gradient_norm(nn::ModelImpl& model, double clip) {
  const auto parameters = model.parameters();
  if (clip > 0) return torch::nn::utils::clip_grad_norm_(parameters, clip);
  double sum = 0.0;
  for (const auto& p : parameters)
    if (p.grad().defined()) sum += p.grad().pow(2).sum().item<double>();
  return std::sqrt(sum);
}

int64_t real_tokens(const data::Batch& batch) {
  int64_t n = batch.padding.sum().item<int64_t>();
  if (batch.padding_b.defined()) n += batch.padding_b.sum().item<int64_t>();
  return n;
}

// Higher is better: accuracy for classifiers, minus the loss for language models.
double score(const nn::ModelImpl& model, const EvalResult& r) {
  return model.options.kind() == nn::ModelKind::language_model ? -r.loss : r.accuracy;
}

}  // namespace

torch::optim::AdamW make_optimizer(nn::ModelImpl& model, const TrainConfig& t) {
  std::vector<at::Tensor> decayed, plain;
  for (const auto& p : model.parameters()) (p.dim() >= 2 ? decayed : plain).push_back(p);
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(t.lr).betas({t.beta1, t.beta2}).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(t.weight_decay));
  groups.emplace_back(plain, options(0.0));
  return torch::optim::AdamW(groups, torch::optim::AdamWOptions(t.lr));
}

BatchLoss batch_loss(nn::ModelImpl& model, const data::Batch& batch, OptionalGenerator draws) {
  const at::Tensor logits = model.forward(batch.tokens, batch.padding, batch.tokens_b, batch.padding_b, draws);
  BatchLoss out;
  at::Tensor predicted, targets;
  if (model.options.kind() == nn::ModelKind::language_model) {
    // position n predicts token n + 1; padded targets are ignored.
    const int64_t n = batch.tokens.size(1);
    const at::Tensor inputs = logits.narrow(1, 0, n - 1).flatten(0, 1);  // (B (N-1), V)
    targets = batch.tokens.narrow(1, 1, n - 1).masked_fill(batch.padding.narrow(1, 1, n - 1).logical_not(), -100).flatten();
    out.loss = at::cross_entropy_loss(inputs, targets, {}, at::Reduction::Mean, -100);
    predicted = inputs.argmax(-1);
  } else {
    targets = batch.labels;
    out.loss = at::cross_entropy_loss(logits, targets);
    predicted = logits.argmax(-1);
  }
  const at::Tensor counted = targets.ne(-100);
  out.predictions = counted.sum().item<int64_t>();
  out.correct = predicted.eq(targets).logical_and(counted).sum().item<int64_t>();
  return out;
}

EvalResult evaluate(nn::ModelImpl& model, const data::Dataset& dataset, int64_t max_length, int64_t batch_size,
                    int64_t max_batches, uint64_t seed, ProcessGroup* group) {
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard no_grad;
  int64_t batches = (dataset.size() + batch_size - 1) / batch_size;
  if (max_batches > 0) batches = std::min(batches, max_batches);
  const int64_t rank = group ? group->rank() : 0, world_size = group ? group->world_size() : 1;
  // loss sum, correct, predictions, tokens
  at::Tensor totals = at::zeros({4}, at::kDouble);
  auto total = totals.accessor<double, 1>();
  for (int64_t b = rank; b < batches; b += world_size) {
    std::vector<int64_t> examples;
    for (int64_t i = b * batch_size; i < std::min(dataset.size(), (b + 1) * batch_size); ++i) examples.push_back(i);
    const data::Batch batch = data::make_batch(dataset, examples, max_length);
    with_seeded_rng(seed + static_cast<uint64_t>(b) * 0x9E3779B97F4A7C15ULL, [&] {
      const BatchLoss loss = batch_loss(model, batch);
      total[0] += loss.loss.item<double>() * static_cast<double>(loss.predictions);
      total[1] += static_cast<double>(loss.correct);
      total[2] += static_cast<double>(loss.predictions);
      total[3] += static_cast<double>(real_tokens(batch));
    });
  }
  if (group) group->all_reduce_sum(totals);
  model.train(was_training);
  EvalResult result;
  result.predictions = static_cast<int64_t>(total[2]);
  result.tokens = static_cast<int64_t>(total[3]);
  result.loss = total[0] / std::max(1.0, total[2]);
  result.accuracy = total[1] / std::max(1.0, total[2]);
  return result;
}

namespace {

// Runs `step` on every rank; when it throws on any rank, every rank throws a DistributedError
// quoting each failure. Alone, the exception passes through as it is.
template <class F>
void on_every_rank(ProcessGroup* group, F&& step) {
  if (!group) return step();
  std::string error;
  try {
    step();
  } catch (const std::exception& e) {
    error = e.what();
  }
  group->check_all(error);
}

at::Tensor generator_state(at::Generator generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

TrainSummary run_training(const Config& config, const TrainerOptions& options, ProcessGroup* group) {
  const TrainConfig& t = config.train;
  const int64_t rank = group ? group->rank() : 0, world_size = group ? group->world_size() : 1;
  const bool leader = rank == 0;  // writes the files and prints
  const std::string checkpoint_path = options.out_dir + "/checkpoint.pt", best_path = options.out_dir + "/best.pt";
  std::optional<data::Dataset> train_set, valid_set;
  on_every_rank(group, [&] {
    if (leader) {
      std::error_code error;
      std::filesystem::create_directories(options.out_dir, error);
      if (error)
        throw std::runtime_error(fmt::format("cannot create the output folder '{}': {}", options.out_dir, error.message()));
      if (!options.resume && access(checkpoint_path.c_str(), F_OK) == 0)
        throw std::runtime_error(fmt::format("'{}' already holds a run (checkpoint.pt); continue it with --resume or "
                                             "choose another --out",
                                             options.out_dir));
    }
    if (options.resume && access(checkpoint_path.c_str(), F_OK) != 0)
      throw std::runtime_error(fmt::format("--resume: no checkpoint at '{}'", checkpoint_path));
    train_set.emplace(load_split(config, "train"));
    valid_set.emplace(load_split(config, "valid"));
    check_same_task(train_set->info(), valid_set->info());
  });

  at::manual_seed(static_cast<uint64_t>(t.seed));
  nn::Model model = inference::build_model(config, train_set->info());
  torch::optim::AdamW optimizer = make_optimizer(*model, t);
  data::EpochSampler sampler(train_set->size(), static_cast<uint64_t>(t.seed), rank, world_size);
  // The SPE draws have a stream of their own, so that their sizes alone (not those of dropout
  // masks, which follow each rank's batch) decide where it is: shared draws stay shared.
  const bool own_draws = group && t.rank_draws == RankDraws::own && rank > 0;
  const uint64_t rank_seed = static_cast<uint64_t>(t.seed) + (own_draws ? 1000003ULL * static_cast<uint64_t>(rank) : 0);
  at::Generator draws = make_generator(rank_seed);
  CheckpointHeader state{config, train_set->info(), {}};
  state.state.world_size = world_size;
  if (options.resume) {
    on_every_rank(group, [&] {
      const int64_t saved_world_size = read_checkpoint_header(checkpoint_path).state.world_size;
      if (saved_world_size != world_size)
        throw std::runtime_error(fmt::format(
            "'{}' was written by a run of {} process(es) and this run has {}: resume it with {} (spe train --nproc {}, "
            "or as many torchrun workers in all), or start a new run in another --out",
            checkpoint_path, saved_world_size, world_size, saved_world_size, saved_world_size));
      state.state = load_checkpoint(checkpoint_path, *model, &optimizer, &config, rank, &draws).state;
      sampler.set_position(state.state.sampler);
    });
  } else if (own_draws) {
    at::manual_seed(rank_seed);  // after the model's initialisation: dropout masks of its own too
  }
  std::unique_ptr<GradientReducer> reducer;
  if (group) {
    at::NoGradGuard no_grad;
    group->broadcast(model->parameters());
    group->broadcast(model->buffers());
    reducer = std::make_unique<GradientReducer>(*group, model->parameters());
  }
  // Every rank takes part in gathering the draws' states; rank 0 writes.
  auto save = [&](const std::string& path) {
    std::vector<RankGenerators> generators{{generator_state(at::detail::getDefaultCPUGenerator()), generator_state(draws)}};
    if (group) {
      const std::vector<at::Tensor> global = group->all_gather(generators[0].global);
      const std::vector<at::Tensor> drawn = group->all_gather(generators[0].draws);
      generators.clear();
      for (int64_t r = 0; r < world_size; ++r) generators.push_back({global[r], drawn[r]});
    }
    if (leader) save_checkpoint(path, state, *model, &optimizer, generators);
  };

  std::optional<MetricsFile> metrics;
  if (leader) {
    write_file_atomically(options.out_dir + "/config.yaml", to_yaml(config));
    metrics.emplace(options.out_dir + "/metrics.jsonl", options.resume ? state.state.step : 0);
  }
  const int64_t last_step = options.until_step > 0 ? std::min(options.until_step, t.steps) : t.steps;
  ProgressLine progress(t.steps, options.progress, !leader);
  TrainSummary summary;
  summary.parameters = nn::parameter_count(*model);
  progress.message(fmt::format("{}: {} parameters; {} training and {} validation examples; {}{}", config.task,
                               summary.parameters, train_set->size(), valid_set->size(),
                               options.resume ? fmt::format("resuming at step {}", state.state.step) : "starting",
                               group ? fmt::format(" on {} ranks", world_size) : ""));

  reset_resident_peak();
  const int64_t micro_batch = t.batch_size / t.accumulation / world_size;
  const Clock::time_point started = Clock::now();
  Clock::time_point window_start = started;
  double window_loss = 0.0, trained_tokens = 0.0;
  double window_correct = 0, window_predictions = 0, window_tokens = 0;
  double window_sync_s = 0;  // waiting for the other ranks: sums not hidden behind the backward pass
  int64_t window_steps = 0;
  model->train();
  while (state.state.step < last_step) {
    const int64_t step = state.state.step;
    const double lr = learning_rate(t, step);
    set_learning_rate(optimizer, lr);
    optimizer.zero_grad();
    double step_loss = 0.0;
    bool out_of_time = false;
    for (int64_t m = 0; m < t.accumulation; ++m) {
      const data::Batch batch = data::make_batch(*train_set, sampler.next(micro_batch), config.data.max_length);
      const BatchLoss b = batch_loss(*model, batch, draws);
      // Over every rank's share: loss sum, correct, predictions, tokens; and whether rank 0's time is up.
      const double spent = leader && options.time_budget_s > 0 && seconds_since(started) >= options.time_budget_s;
      at::Tensor totals = at::tensor(
          {b.predictions > 0 ? b.loss.item<double>() * static_cast<double>(b.predictions) : 0.0,
           static_cast<double>(b.correct), static_cast<double>(b.predictions), static_cast<double>(real_tokens(batch)), spent},
          at::kDouble);
      if (group) {
        const Clock::time_point sync_start = Clock::now();
        group->all_reduce_sum(totals);
        window_sync_s += seconds_since(sync_start);
      }
      const auto total = totals.accessor<double, 1>();
      const double loss = total[0] / std::max(1.0, total[2]);
      if (!std::isfinite(loss))
        throw std::runtime_error(fmt::format("step {}: the training loss is {}; stopped. The last good state is the "
                                             "checkpoint in '{}' (try a lower train.lr)",
                                             step + 1, loss, options.out_dir));
      if (reducer && m == t.accumulation - 1) reducer->arm();
      // This rank's share of the mean over the global batch: the sum over ranks is that mean.
      if (b.predictions > 0)
        (b.loss * (static_cast<double>(b.predictions) / total[2] / static_cast<double>(t.accumulation))).backward();
      step_loss += loss / static_cast<double>(t.accumulation);
      window_correct += total[1];
      window_predictions += total[2];
      window_tokens += total[3];
      trained_tokens += total[3];
      out_of_time = out_of_time || total[4] > 0;
    }
    if (reducer) {
      const Clock::time_point sync_start = Clock::now();
      reducer->finish();
      window_sync_s += seconds_since(sync_start);
    }
    const double grad_norm = gradient_norm(*model, t.clip_grad_norm);
    if (!std::isfinite(grad_norm))
      throw std::runtime_error(fmt::format("step {}: the gradient norm is {}; stopped. The last good state is the "
                                           "checkpoint in '{}' (try a lower train.lr)",
                                           step + 1, grad_norm, options.out_dir));
    optimizer.step();
    state.state.step = step + 1;
    const int64_t done = state.state.step;
    model->transformer->after_training_step(done);
    const int64_t redraw = config.model.transformer().attention().redraw_interval();
    if (group && t.rank_draws == RankDraws::shared && redraw > 0 && done % redraw == 0) {
      at::NoGradGuard no_grad;
      group->broadcast(model->buffers());  // rank 0's new random features
    }
    window_loss += step_loss;
    ++window_steps;

    const bool logged = done % t.log_every == 0 || done == last_step;
    const double window_s = seconds_since(window_start);
    const double accuracy = window_correct / std::max(1.0, window_predictions);
    progress.show(done, window_loss / static_cast<double>(window_steps), accuracy,
                  static_cast<double>(window_steps) / window_s, window_tokens / window_s, logged);
    if (logged) {
      if (metrics)
        metrics->write({{"step", done},
                        {"split", "train"},
                        {"loss", window_loss / static_cast<double>(window_steps)},
                        {"accuracy", accuracy},
                        {"lr", lr},
                        {"grad_norm", grad_norm},
                        {"steps_per_s", static_cast<double>(window_steps) / window_s},
                        {"tokens_per_s", window_tokens / window_s},
                        {"epoch", sampler.position().epoch},
                        {"peak_rss_mib", resident_peak_mib()},
                        {"sync_share", window_sync_s / window_s},
                        {"elapsed_s", seconds_since(started)}});
      window_start = Clock::now();
      window_loss = window_correct = window_predictions = window_tokens = window_sync_s = 0.0;
      window_steps = 0;
    }
    const bool finished = done == last_step || out_of_time;
    if (done % t.eval_every == 0 || finished) {
      const EvalResult r = evaluate(*model, *valid_set, config.data.max_length, t.eval_batch_size, t.eval_batches,
                                    static_cast<uint64_t>(t.seed) + 1, group);
      summary.validation = r;
      if (metrics)
        metrics->write({{"step", done}, {"split", "valid"}, {"loss", r.loss}, {"accuracy", r.accuracy},
                        {"predictions", r.predictions}, {"elapsed_s", seconds_since(started)}});
      progress.message(fmt::format("step {}: validation loss {:.4f}, accuracy {:.4f}", done, r.loss, r.accuracy));
      if (!state.state.has_best || score(*model, r) > state.state.best_metric) {
        state.state.best_metric = score(*model, r);
        state.state.has_best = true;
        state.state.sampler = sampler.position();
        save(best_path);
      }
    }
    if (done % t.checkpoint_every == 0 || finished) {
      state.state.sampler = sampler.position();
      save(checkpoint_path);
    }
    if (out_of_time) {
      progress.message(fmt::format("the time budget of {} is spent", format_duration(options.time_budget_s)));
      break;
    }
  }
  summary.steps = state.state.step;
  summary.seconds = seconds_since(started);
  summary.peak_rss_mib = resident_peak_mib();
  summary.tokens_per_s = trained_tokens / summary.seconds;
  progress.message(fmt::format("done: step {} of {} in {}; checkpoint {}", summary.steps, t.steps,
                               format_duration(summary.seconds), checkpoint_path));
  return summary;
}

}  // namespace

TrainSummary train(const Config& config, const TrainerOptions& options) {
  const TrainConfig& t = config.train;
  const int64_t world_size = options.launch ? options.launch->world_size : 1;
  if (t.batch_size % (t.accumulation * world_size) != 0)
    throw std::invalid_argument(fmt::format("train.batch_size ({}) does not split evenly into {} rank(s) x {} "
                                            "micro-batch(es) (train.accumulation)",
                                            t.batch_size, world_size, t.accumulation));
  if (world_size == 1) return run_training(config, options, nullptr);
  ProcessGroup group(*options.launch, options.timeout_s);
  try {
    return run_training(config, options, &group);
  } catch (const DistributedError&) {
    throw;  // every rank knows, or the failure was another rank's
  } catch (const std::exception& e) {
    group.report_failure(e.what());
    throw;
  }
}

CheckpointEvaluation evaluate_checkpoint(const std::string& checkpoint, const std::string& split,
                                         const std::string& data_dir, int64_t max_batches) {
  inference::SavedModel saved = inference::load_saved_model(checkpoint);
  const data::Dataset dataset = load_split_for(saved.header, split, data_dir);
  const Config& config = saved.header.config;
  return {saved.header, evaluate(*saved.model, dataset, config.data.max_length, config.train.eval_batch_size,
                                 max_batches, static_cast<uint64_t>(config.train.seed) + 1)};
}

}  // namespace spe::train
