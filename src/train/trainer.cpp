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
#include "spe/util/threads.h"

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
    throw std::runtime_error(fmt::format("no {} split at '{}': data.dir ('{}') holds no prepared {} data; prepare it "
                                         "there or set data.dir to the folder that holds it",
                                         split, path, config.data.dir, config.task));
  return data::Dataset::load(path);
}

void check_same_task(const data::DatasetInfo& a, const data::DatasetInfo& b) {
  if (!data::same_model_inputs(a, b))
    throw std::runtime_error(fmt::format("the {} and {} splits describe different tasks (vocabulary {} vs {}, "
                                         "classes {} vs {}); the splits of data.dir must be prepared together",
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
    // Batch b's draws: a generator of its own, whichever rank evaluates it.
    const uint64_t batch_seed = seed + static_cast<uint64_t>(b) * 0x9E3779B97F4A7C15ULL;
    const BatchLoss loss = batch_loss(model, batch, make_generator(batch_seed));
    total[0] += loss.loss.item<double>() * static_cast<double>(loss.predictions);
    total[1] += static_cast<double>(loss.correct);
    total[2] += static_cast<double>(loss.predictions);
    total[3] += static_cast<double>(real_tokens(batch));
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

// The train and valid splits of a run, checked to describe one task.
struct Splits {
  data::Dataset train, valid;
};

Splits load_splits(const Config& config) {
  Splits splits{load_split(config, "train"), load_split(config, "valid")};
  check_same_task(splits.train.info(), splits.valid.info());
  return splits;
}

// The model of a run, its parameters drawn from train.seed.
nn::Model seeded_model(const Config& config, const data::DatasetInfo& data) {
  at::manual_seed(static_cast<uint64_t>(config.train.seed));
  return inference::build_model(config, data);
}

// What one optimizer step leaves for logging and for the loop.
struct StepReport {
  double loss = 0.0;  // mean over the global batch, averaged over its micro-batches
  double lr = 0.0, grad_norm = 0.0;
  bool out_of_time = false;  // rank 0's time budget was spent during the step
};

// The training sums since the last log line, over every rank.
struct Window {
  Clock::time_point start;
  double loss = 0.0;  // sum of the steps' losses
  double correct = 0.0, predictions = 0.0, tokens = 0.0;
  double sync_s = 0.0;  // waiting for the other ranks: sums not hidden behind the backward pass
  int64_t steps = 0;
};

// One run of train(): the constructor sets it up (folder, data, model, optimizer, sampler, the
// draws' generator, resumed or fresh, parameters shared among the ranks, output files); run()
// takes steps until the last one or the time budget, evaluating, logging and saving on the way.
// With a group, every rank holds one; rank 0 alone writes files and prints.
class Trainer {
 public:
  Trainer(const Config& config, const TrainerOptions& options, ProcessGroup* group);
  TrainSummary run();

 private:
  Splits checked_splits() const;
  void check_folder() const;
  void resume();
  void share_parameters();
  void open_outputs();
  double tokens_per_micro_batch() const;
  StepReport step();
  double micro_step(int64_t step, bool last, bool& out_of_time);
  void reduce_gradients();
  void after_step(int64_t done);
  void log(const StepReport& report);
  void evaluate_and_keep_best();
  void save(const std::string& path);
  TrainSummary finish();

  const Config& config_;
  const TrainConfig& t_;
  const TrainerOptions& options_;
  ProcessGroup* group_;
  const int64_t rank_, world_size_;
  const bool leader_;  // writes the files and prints
  const std::string checkpoint_path_, best_path_;
  const Splits data_;
  nn::Model model_;
  torch::optim::AdamW optimizer_;
  data::EpochSampler sampler_;
  // The SPE draws have a stream of their own, so that their sizes alone (not those of dropout
  // masks, which follow each rank's batch) decide where it is: shared draws stay shared.
  const bool own_draws_;
  const uint64_t draws_seed_;
  at::Generator draws_;
  CheckpointHeader state_;
  std::unique_ptr<GradientReducer> reducer_;
  std::optional<MetricsFile> metrics_;
  const int64_t last_step_;
  const int64_t micro_batch_;
  ProgressLine progress_;
  TrainSummary summary_;
  // Wall time of training, every resumed part included (metrics' elapsed_s, --budget, the summary).
  double trained_seconds() const { return resumed_seconds_ + seconds_since(started_); }
  Clock::time_point started_;
  double resumed_seconds_ = 0.0;  // the training time of the parts before this one
  Window window_;
  double trained_tokens_ = 0.0;
};

Trainer::Trainer(const Config& config, const TrainerOptions& options, ProcessGroup* group)
    : config_(config),
      t_(config.train),
      options_(options),
      group_(group),
      rank_(group ? group->rank() : 0),
      world_size_(group ? group->world_size() : 1),
      leader_(rank_ == 0),
      checkpoint_path_(options.out_dir + "/checkpoint.pt"),
      best_path_(options.out_dir + "/best.pt"),
      data_(checked_splits()),
      model_(seeded_model(config, data_.train.info())),
      optimizer_(make_optimizer(*model_, config.train)),
      sampler_(data_.train.size(), static_cast<uint64_t>(config.train.seed), rank_, world_size_),
      own_draws_(group && config.train.rank_draws == RankDraws::own && rank_ > 0),
      draws_seed_(static_cast<uint64_t>(config.train.seed) + (own_draws_ ? 1000003ULL * static_cast<uint64_t>(rank_) : 0)),
      draws_(make_generator(draws_seed_)),
      state_{config, data_.train.info(), {}},
      last_step_(options.until_step > 0 ? std::min(options.until_step, config.train.steps) : config.train.steps),
      micro_batch_(config.train.batch_size / config.train.accumulation / world_size_),
      progress_(config.train.steps, options.progress, !leader_) {
  state_.state.world_size = world_size_;
  if (options_.resume)
    resume();
  else if (own_draws_)
    at::manual_seed(draws_seed_);  // after the model's initialisation: dropout masks of its own too
  share_parameters();
  open_outputs();
}

// The output folder checked, then the data loaded, on every rank (a failure anywhere stops all).
Splits Trainer::checked_splits() const {
  std::optional<Splits> splits;
  on_every_rank(group_, [&] {
    check_folder();
    splits.emplace(load_splits(config_));
  });
  return std::move(*splits);
}

// Rank 0 makes the output folder and refuses one that holds a run unless resuming; every rank
// checks that a resumed run has its checkpoint.
void Trainer::check_folder() const {
  if (leader_) {
    std::error_code error;
    std::filesystem::create_directories(options_.out_dir, error);
    if (error)
      throw std::runtime_error(fmt::format("cannot create the output folder '{}': {}", options_.out_dir, error.message()));
    if (!options_.resume && access(checkpoint_path_.c_str(), F_OK) == 0)
      throw std::runtime_error(fmt::format("'{}' already holds a run (checkpoint.pt); resume it or choose another "
                                           "output folder",
                                           options_.out_dir));
  }
  if (options_.resume && access(checkpoint_path_.c_str(), F_OK) != 0)
    throw std::runtime_error(fmt::format("cannot resume: no checkpoint at '{}'", checkpoint_path_));
}

// The model, optimizer, generators and sampler as the checkpoint left them.
void Trainer::resume() {
  on_every_rank(group_, [&] {
    const int64_t saved_world_size = read_checkpoint_header(checkpoint_path_).state.world_size;
    if (saved_world_size != world_size_)
      throw std::runtime_error(fmt::format(
          "'{}' was written by a run of {} process(es) and this run has {}: resume it with {} processes in all, or "
          "start a new run in another output folder",
          checkpoint_path_, saved_world_size, world_size_, saved_world_size));
    state_.state = load_checkpoint(checkpoint_path_, *model_, &optimizer_, &config_, rank_, &draws_).state;
    sampler_.set_position(state_.state.sampler);
    resumed_seconds_ = state_.state.trained_seconds;
  });
}

// Every rank starts from rank 0's parameters and buffers; the reducer sums the gradients.
void Trainer::share_parameters() {
  if (!group_) return;
  at::NoGradGuard no_grad;
  group_->broadcast(model_->parameters());
  group_->broadcast(model_->buffers());
  reducer_ = std::make_unique<GradientReducer>(*group_, model_->parameters());
}

// Rank 0: config.yaml, metrics.jsonl (kept up to the resumed step), the opening message.
void Trainer::open_outputs() {
  if (leader_) {
    write_file_atomically(options_.out_dir + "/config.yaml", to_yaml(config_));
    metrics_.emplace(options_.out_dir + "/metrics.jsonl", options_.resume ? state_.state.step : 0);
  }
  summary_.parameters = nn::parameter_count(*model_);
  const ThreadChoice threads = choose_step_threads(step_flops(summary_.parameters, tokens_per_micro_batch(), true),
                                                         nn::softmax_attention(config_.model));
  progress_.message(fmt::format("{}: {} parameters; {} training and {} validation examples; threads: {} intra-op, {} "
                                "BLAS; {}{}",
                                config_.task, summary_.parameters, data_.train.size(), data_.valid.size(),
                                threads.intra_op, threads.blas,
                                options_.resume ? fmt::format("resuming at step {}", state_.state.step) : "starting",
                                group_ ? fmt::format(" on {} ranks", world_size_) : ""));
}

// The tokens of one micro-batch, with the training examples' mean length, at most max_length per
// sequence.
double Trainer::tokens_per_micro_batch() const {
  const auto& train = data_.train;
  const double fields = static_cast<double>(train.info().fields);
  const double per_sequence = static_cast<double>(train.total_tokens()) / std::max<double>(1.0, train.size() * fields);
  const double tokens = std::min(per_sequence, static_cast<double>(config_.data.max_length)) * fields;
  return tokens * static_cast<double>(micro_batch_);
}

TrainSummary Trainer::run() {
  reset_resident_peak();
  started_ = window_.start = Clock::now();
  model_->train();
  while (state_.state.step < last_step_) {
    const StepReport report = step();
    log(report);
    const int64_t done = state_.state.step;
    const bool finished = done == last_step_ || report.out_of_time;
    if (done % t_.eval_every == 0 || finished) evaluate_and_keep_best();
    if (done % t_.checkpoint_every == 0 || finished) {
      state_.state.sampler = sampler_.position();
      save(checkpoint_path_);
    }
    if (report.out_of_time) {
      progress_.message(fmt::format("the time budget of {} is spent", format_duration(options_.time_budget_s)));
      break;
    }
  }
  return finish();
}

// One optimizer step over train.accumulation micro-batches of every rank's share.
StepReport Trainer::step() {
  const int64_t step = state_.state.step;
  StepReport report;
  report.lr = learning_rate(t_, step);
  set_learning_rate(optimizer_, report.lr);
  optimizer_.zero_grad();
  for (int64_t m = 0; m < t_.accumulation; ++m)
    report.loss += micro_step(step, m == t_.accumulation - 1, report.out_of_time) / static_cast<double>(t_.accumulation);
  reduce_gradients();
  report.grad_norm = gradient_norm(*model_, t_.clip_grad_norm);
  if (!std::isfinite(report.grad_norm))
    throw std::runtime_error(fmt::format("step {}: the gradient norm is {}; stopped. The last good state is the "
                                         "checkpoint in '{}' (try a lower train.lr)",
                                         step + 1, report.grad_norm, options_.out_dir));
  optimizer_.step();
  state_.state.step = step + 1;
  after_step(state_.state.step);
  window_.loss += report.loss;
  ++window_.steps;
  return report;
}

// One micro-batch's forward and backward pass; returns the loss of the global micro-batch (every
// rank's share) and sets out_of_time when rank 0's time budget is spent.
double Trainer::micro_step(int64_t step, bool last, bool& out_of_time) {
  const data::Batch batch = data::make_batch(data_.train, sampler_.next(micro_batch_), config_.data.max_length);
  const BatchLoss b = batch_loss(*model_, batch, draws_);
  // Over every rank's share: loss sum, correct, predictions, tokens; and whether rank 0's time is up.
  const double spent = leader_ && options_.time_budget_s > 0 && trained_seconds() >= options_.time_budget_s;
  at::Tensor totals = at::tensor({b.predictions > 0 ? b.loss.item<double>() * static_cast<double>(b.predictions) : 0.0,
                                  static_cast<double>(b.correct), static_cast<double>(b.predictions),
                                  static_cast<double>(real_tokens(batch)), spent},
                                 at::kDouble);
  if (group_) {
    const Clock::time_point sync_start = Clock::now();
    group_->all_reduce_sum(totals);
    window_.sync_s += seconds_since(sync_start);
  }
  const auto total = totals.accessor<double, 1>();
  const double loss = total[0] / std::max(1.0, total[2]);
  if (!std::isfinite(loss))
    throw std::runtime_error(fmt::format("step {}: the training loss is {}; stopped. The last good state is the "
                                         "checkpoint in '{}' (try a lower train.lr)",
                                         step + 1, loss, options_.out_dir));
  if (reducer_ && last) reducer_->arm();
  // This rank's share of the mean over the global batch: the sum over ranks is that mean.
  if (b.predictions > 0)
    (b.loss * (static_cast<double>(b.predictions) / total[2] / static_cast<double>(t_.accumulation))).backward();
  window_.correct += total[1];
  window_.predictions += total[2];
  window_.tokens += total[3];
  trained_tokens_ += total[3];
  out_of_time = out_of_time || total[4] > 0;
  return loss;
}

void Trainer::reduce_gradients() {
  if (!reducer_) return;
  const Clock::time_point sync_start = Clock::now();
  reducer_->finish();
  window_.sync_s += seconds_since(sync_start);
}

// The model's own per-step work (random features redrawn); shared draws stay rank 0's.
void Trainer::after_step(int64_t done) {
  model_->transformer->after_training_step(done);
  const int64_t redraw = config_.model.transformer().attention().redraw_interval();
  if (group_ && t_.rank_draws == RankDraws::shared && redraw > 0 && done % redraw == 0) {
    at::NoGradGuard no_grad;
    group_->broadcast(model_->buffers());  // rank 0's new random features
  }
}

// The progress line after every step; a metrics line (and a new window) every train.log_every.
void Trainer::log(const StepReport& report) {
  const int64_t done = state_.state.step;
  const bool logged = done % t_.log_every == 0 || done == last_step_;
  const double window_s = seconds_since(window_.start);
  const double steps = static_cast<double>(window_.steps);
  const double accuracy = window_.correct / std::max(1.0, window_.predictions);
  progress_.show(done, window_.loss / steps, accuracy, steps / window_s, window_.tokens / window_s, logged);
  if (!logged) return;
  if (metrics_)
    metrics_->write({{"step", done},
                     {"split", "train"},
                     {"loss", window_.loss / steps},
                     {"accuracy", accuracy},
                     {"lr", report.lr},
                     {"grad_norm", report.grad_norm},
                     {"steps_per_s", steps / window_s},
                     {"tokens_per_s", window_.tokens / window_s},
                     {"epoch", sampler_.position().epoch},
                     {"peak_rss_mib", resident_peak_mib()},
                     {"sync_share", window_.sync_s / window_s},
                     {"elapsed_s", trained_seconds()}});
  window_ = Window{};
  window_.start = Clock::now();
}

// Evaluates on the valid split (shared among the ranks); a better score is saved as best.pt.
void Trainer::evaluate_and_keep_best() {
  const int64_t done = state_.state.step;
  const EvalResult r = evaluate(*model_, data_.valid, config_.data.max_length, t_.eval_batch_size, t_.eval_batches,
                                static_cast<uint64_t>(t_.seed) + 1, group_);
  summary_.validation = r;
  if (metrics_)
    metrics_->write({{"step", done}, {"split", "valid"}, {"loss", r.loss}, {"accuracy", r.accuracy},
                     {"predictions", r.predictions}, {"elapsed_s", trained_seconds()}});
  progress_.message(fmt::format("step {}: validation loss {:.4f}, accuracy {:.4f}", done, r.loss, r.accuracy));
  if (state_.state.has_best && score(*model_, r) <= state_.state.best_metric) return;
  state_.state.best_metric = score(*model_, r);
  state_.state.has_best = true;
  state_.state.sampler = sampler_.position();
  save(best_path_);
}

// Every rank takes part in gathering the generators' states; rank 0 writes.
void Trainer::save(const std::string& path) {
  std::vector<RankGenerators> generators{{generator_state(at::detail::getDefaultCPUGenerator()), generator_state(draws_)}};
  if (group_) {
    const std::vector<at::Tensor> global = group_->all_gather(generators[0].global);
    const std::vector<at::Tensor> drawn = group_->all_gather(generators[0].draws);
    generators.clear();
    for (int64_t r = 0; r < world_size_; ++r) generators.push_back({global[r], drawn[r]});
  }
  state_.state.trained_seconds = trained_seconds();
  if (leader_) save_checkpoint(path, state_, *model_, &optimizer_, generators);
}

TrainSummary Trainer::finish() {
  summary_.steps = state_.state.step;
  summary_.seconds = trained_seconds();
  summary_.peak_rss_mib = resident_peak_mib();
  summary_.tokens_per_s = trained_tokens_ / seconds_since(started_);  // the tokens of this part
  progress_.message(fmt::format("done: step {} of {} in {}; checkpoint {}", summary_.steps, t_.steps,
                                format_duration(summary_.seconds), checkpoint_path_));
  return summary_;
}

}  // namespace

TrainSummary train(const Config& config, const TrainerOptions& options) {
  const TrainConfig& t = config.train;
  const int64_t world_size = options.launch ? options.launch->world_size : 1;
  if (t.batch_size % (t.accumulation * world_size) != 0)
    throw std::invalid_argument(fmt::format("train.batch_size ({}) does not split evenly into {} rank(s) x {} "
                                            "micro-batch(es) (train.accumulation)",
                                            t.batch_size, world_size, t.accumulation));
  if (world_size == 1) return Trainer(config, options, nullptr).run();
  ProcessGroup group(*options.launch, options.timeout_s);
  // Under spe's own launcher an error the store took is the launcher's to print (one line per job).
  const bool launcher_prints = options.launch->local_launcher;
  try {
    return Trainer(config, options, &group).run();
  } catch (const DistributedError& e) {  // every rank knows, or the failure was another rank's
    if (launcher_prints && group.report_error(e.what())) throw ReportedToLauncher(e.what());
    throw;
  } catch (const std::exception& e) {
    const bool reported = group.report_failure(e.what()) && group.report_error(e.what());
    if (launcher_prints && reported) throw ReportedToLauncher(e.what());
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
