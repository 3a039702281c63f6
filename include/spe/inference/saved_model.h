#pragma once
// Models from configurations and checkpoints, for using a trained model (generation, evaluation,
// length extrapolation) without the trainer: no optimizer, no training loop, no process group.
// The checkpoint format itself (writer and reader) is spe/train/checkpoint.h's; the configuration
// schema is spe/train/config.h's.
#include <string>

#include "spe/data/dataset.h"
#include "spe/nn/model.h"
#include "spe/train/checkpoint.h"
#include "spe/train/config.h"

namespace spe::inference {

// The model a configuration and a dataset describe (vocabulary, classes, grid from the data), in
// float64 when config.train.dtype says so. Throws std::invalid_argument when the model cannot read
// the data (a dual encoder on single sequences, pairs without one, a 2-D convSPE without a grid).
nn::Model build_model(const train::Config& config, const data::DatasetInfo& data);

// A saved model ready to use: what its checkpoint says, and the model with the saved parameters,
// in eval mode.
struct SavedModel {
  train::CheckpointHeader header;
  nn::Model model;
};
SavedModel load_saved_model(const std::string& checkpoint);

}  // namespace spe::inference
