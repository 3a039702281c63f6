#pragma once
// Training from a configuration: AdamW with warmup and a decay schedule, gradient clipping and
// accumulation, periodic evaluation with the best checkpoint kept, checkpoints to resume from
// exactly, metrics as JSON lines, a progress line with steps/s, tokens/s and the ETA.
//
// Files in the output folder:
//   config.yaml     the resolved configuration
//   metrics.jsonl   one JSON object per log or evaluation: {"step", "split", "loss", ...}
//   checkpoint.pt   the latest state (TrainerOptions::resume continues from it)
//   best.pt         the state with the best validation score (accuracy; loss for language models)
//
// Data-parallel (TrainerOptions::launch with a world size above 1): each rank trains on its
// share of every global batch of train.batch_size examples; the loss is weighted so that the
// summed gradient is the gradient of the mean over the whole global batch, as one process would
// compute it. Parameters start from rank 0's; evaluation is shared among the ranks; only rank 0
// writes files and prints.
#include <torch/optim/adamw.h>

#include <optional>
#include <string>

#include "spe/data/batch.h"
#include "spe/nn/model.h"
#include "spe/train/checkpoint.h"
#include "spe/train/config.h"
#include "spe/train/distributed.h"

namespace spe::train {

struct EvalResult {
  double loss = 0.0;      // mean cross-entropy per prediction
  double accuracy = 0.0;  // fraction of predictions right (classes, or next tokens)
  int64_t predictions = 0;
  int64_t tokens = 0;     // input tokens read
};

// The loss of a batch and the counts behind its accuracy.
struct BatchLoss {
  at::Tensor loss;  // scalar, mean over predictions
  int64_t correct = 0, predictions = 0;
};
// draws: the generator of the SPE draws (LibTorch's global one when absent).
BatchLoss batch_loss(nn::ModelImpl& model, const data::Batch& batch, OptionalGenerator draws = c10::nullopt);

// Evaluates in eval mode without gradients, in batches in dataset order; the stochastic parts (SPE
// codes) of batch b draw from a generator of their own seeded from (seed, b), so an evaluation is
// reproducible and the same however many ranks share it, and LibTorch's global generator is not
// used. With a group, rank r evaluates batches r, r + W, ... and every rank gets the totals.
EvalResult evaluate(nn::ModelImpl& model, const data::Dataset& dataset, int64_t max_length, int64_t batch_size,
                    int64_t max_batches = 0, uint64_t seed = 0, ProcessGroup* group = nullptr);

// Evaluates a saved run on one split of its data (or of data_dir, when given), with the model
// the checkpoint describes; refuses data of another vocabulary or class count.
struct CheckpointEvaluation {
  CheckpointHeader checkpoint;  // what the checkpoint says about itself (step, best score, ...)
  EvalResult result;
};
CheckpointEvaluation evaluate_checkpoint(const std::string& checkpoint, const std::string& split,
                                         const std::string& data_dir = "", int64_t max_batches = 0);

struct TrainerOptions {
  std::string out_dir;
  bool resume = false;         // continue from out_dir/checkpoint.pt
  int64_t until_step = 0;      // stop (with a checkpoint) after this step; 0: train.steps
  double time_budget_s = 0.0;  // stop (evaluated, with a checkpoint) after this long; 0: none
  bool progress = true;        // the progress line on stderr
  std::optional<LaunchEnvironment> launch;  // data-parallel when its world size is above 1
  double timeout_s = 60.0;     // data-parallel: the deadline of every exchange between ranks
};

struct TrainSummary {
  int64_t steps = 0;       // optimizer steps taken in all, resumed ones included
  int64_t parameters = 0;  // of the model
  double seconds = 0.0;    // wall time of this call
  double tokens_per_s = 0.0;  // training tokens (not padding) per second of this call, evaluations included
  double peak_rss_mib = 0.0;  // the process's peak resident memory during this call
  EvalResult validation;   // at the last step
};

// The trainer's optimizer: AdamW with t's learning rate and betas, weight decay on matrices only
// (not on biases, norms' gains and 1-D tables). Its two parameter groups are what a checkpoint
// saves the optimizer's state by, so a training loop of one's own resumes spe's checkpoints with it.
torch::optim::AdamW make_optimizer(nn::ModelImpl& model, const TrainConfig& t);

// Trains; throws std::runtime_error if the loss or the gradient stops being finite (naming the
// step; the last checkpoint on disk is the last good state), and DistributedError when another
// rank fails or stops answering.
TrainSummary train(const Config& config, const TrainerOptions& options);

}  // namespace spe::train
