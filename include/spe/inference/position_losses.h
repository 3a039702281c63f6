#pragma once
// A language model's next-token loss by position, for length extrapolation (`spe extrapolate`).
#include <cstdint>
#include <vector>

#include "spe/data/dataset.h"
#include "spe/nn/model.h"

namespace spe::inference {

// Entry n is the mean NLL (nats) of token n + 1 given tokens 0 .. n, over every non-overlapping
// window of `length` tokens of the dataset's sequences (sequences shorter than `length` are
// skipped), in eval mode (the model's mode is put back after), SPE codes drawn from `seed`.
// Throws std::invalid_argument for a model that is not a language model and when no sequence is
// long enough.
struct PositionLosses {
  std::vector<double> loss;  // (length - 1) mean NLL per position
  int64_t windows = 0;       // windows averaged
};
PositionLosses position_losses(nn::ModelImpl& model, const data::Dataset& dataset, int64_t length,
                               int64_t batch_size, uint64_t seed = 0);

}  // namespace spe::inference
