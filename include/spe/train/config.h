#pragma once
// A run's configuration: YAML (configs/<task>/<model>.yaml) plus command-line overrides
// (`--set model.layers=4`), validated when read: an unknown key or a bad value is an error that
// names it and says what is allowed. The resolved configuration is saved with every run.
#include <string>
#include <vector>

#include "spe/nn/model.h"

namespace spe::train {

enum class Schedule { constant, cosine, linear, inverse_sqrt };
inline constexpr Choice<Schedule> kSchedules[] = {{"constant", Schedule::constant},
                                                  {"cosine", Schedule::cosine},
                                                  {"linear", Schedule::linear},
                                                  {"inverse_sqrt", Schedule::inverse_sqrt}};

// Data-parallel runs: whether each rank draws its own SPE codes, gate noise, random features and
// dropout masks (more draws per step), or all ranks draw rank 0's, as one process would over the
// global batch (the codes are shared by a batch).
enum class RankDraws { own, shared };
inline constexpr Choice<RankDraws> kRankDraws[] = {{"own", RankDraws::own}, {"shared", RankDraws::shared}};

enum class Precision { float32, float64 };
inline constexpr Choice<Precision> kPrecisions[] = {{"float32", Precision::float32}, {"float64", Precision::float64}};

struct DataConfig {
  std::string dir = "data/listops";  // the folder `spe data <task>` wrote (train/valid/test.bin)
  int64_t max_length = 2048;         // longer sequences are truncated
};

struct TrainConfig {
  int64_t seed = 1;                // model initialisation, data order, dropout and SPE draws
  int64_t steps = 1000;            // optimizer steps
  int64_t batch_size = 16;         // examples per optimizer step, over all ranks (split into micro-batches)
  int64_t accumulation = 1;        // micro-batches per step: batch_size / accumulation each
  double lr = 1e-3;                // peak learning rate
  double weight_decay = 0.01;      // AdamW's decoupled decay
  double beta1 = 0.9, beta2 = 0.999;
  int64_t warmup_steps = 100;      // linear warmup from 0 to lr
  Schedule schedule = Schedule::cosine;  // after warmup
  double min_lr_ratio = 0.0;       // cosine and linear decay to lr * min_lr_ratio
  double clip_grad_norm = 1.0;     // 0 disables clipping
  int64_t eval_every = 200;        // steps between evaluations on the validation split
  int64_t eval_batches = 0;        // 0: the whole validation split
  int64_t eval_batch_size = 32;
  int64_t checkpoint_every = 200;  // steps between checkpoints (also written at the end)
  int64_t log_every = 10;          // steps between train metrics lines
  Precision dtype = Precision::float32;  // of the parameters and the computation
  RankDraws rank_draws = RankDraws::own;  // data-parallel runs only
};

struct Config {
  std::string task = "listops";
  DataConfig data;
  // vocab_size and num_classes come from the dataset when the model is built.
  nn::ModelOptions model{nn::ModelKind::classifier, nn::TransformerOptions(2)};
  TrainConfig train;
};

// Reads `path` (empty: the defaults) and applies overrides "a.b.c=value" in order.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    const std::string& name = "<config>");
// The resolved configuration, every key spelled out; parse_config(to_yaml(c)) == c.
std::string to_yaml(const Config& config);
// The model section alone, to compare a checkpoint's model with a configuration's.
std::string model_yaml(const Config& config);

// The learning rate at optimizer step `step` (0-based): warmup, then the schedule.
double learning_rate(const TrainConfig& train, int64_t step);

}  // namespace spe::train
