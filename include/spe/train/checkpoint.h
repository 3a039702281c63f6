#pragma once
// Checkpoints: the model, the optimizer, the random number generator, the step, the position in
// the data and the configuration, in one file written atomically, so that a resumed run
// continues exactly where the checkpoint was taken.
//
// File layout: 8 bytes magic "SPECKPT\0", u32 format version, u64 payload length, u64 FNV-1a
// checksum of the payload, then the payload: named tensors and a JSON description in spe's own
// format, read by spe's own checked code (src/train/tensor_file.h), not LibTorch's archive reader.
// A damaged, truncated or foreign file, another format version, or a model of another
// configuration is refused with a plain error. The model a checkpoint describes, built and
// loaded for use, is spe/inference/saved_model.h's load_saved_model.
#include <string>

#include "spe/data/batch.h"
#include "spe/nn/model.h"
#include "spe/train/config.h"

namespace torch::optim {
class AdamW;  // torch/optim/adamw.h: only the trainer's code needs its definition
}

namespace spe::train {

struct TrainingState {
  int64_t step = 0;                     // optimizer steps taken
  data::EpochSampler::Position sampler;  // where the next training batch starts
  double best_metric = 0.0;             // best validation score so far (see Trainer)
  bool has_best = false;
  int64_t world_size = 1;               // ranks of the run (a resumed run needs as many)
  double trained_seconds = 0.0;         // wall time of training so far, every resumed part included
};

// What a checkpoint says about itself without building the model.
struct CheckpointHeader {
  Config config;
  data::DatasetInfo data;  // task, vocab_size, num_classes, grid of the training data
  TrainingState state;
};

// The random streams of one rank, as generator states: LibTorch's global generator (dropout,
// random features) and the trainer's generator of SPE draws.
struct RankGenerators {
  at::Tensor global, draws;
};

// ranks: every rank's generators (index = rank; one entry for a single process), saved with the
// optimizer so that each rank resumes its own streams.
void save_checkpoint(const std::string& path, const CheckpointHeader& header, nn::ModelImpl& model,
                     torch::optim::AdamW* optimizer, const std::vector<RankGenerators>& ranks);
CheckpointHeader read_checkpoint_header(const std::string& path);
// Loads the parameters into a model built from the header; with an optimizer, also its state and
// rank's generators (the global one, and `draws` when given and saved). Refuses a checkpoint of
// another model configuration.
CheckpointHeader load_checkpoint(const std::string& path, nn::ModelImpl& model, torch::optim::AdamW* optimizer,
                                 const Config* expected = nullptr, int64_t rank = 0, at::Generator* draws = nullptr);

// One split of the data a checkpoint was trained on (or of data_dir, when given); refused with
// a plain error when its vocabulary, classes or fields differ from the checkpoint's.
data::Dataset load_split_for(const CheckpointHeader& header, const std::string& split, const std::string& data_dir = "");

}  // namespace spe::train
