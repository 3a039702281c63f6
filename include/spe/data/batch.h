#pragma once
// From dataset examples to padded tensors, and the order examples are visited in.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "spe/data/dataset.h"

namespace spe::data {

struct Batch {
  at::Tensor tokens;     // (B, N) int64, 0 where padded
  at::Tensor padding;    // (B, N) bool: true for real tokens, false for padding
  at::Tensor tokens_b;   // (B, N') second sequences of pairs; undefined for single sequences
  at::Tensor padding_b;  // (B, N')
  at::Tensor labels;     // (B) int64
  int64_t size() const { return labels.size(0); }
};

// The examples, truncated to `max_length` tokens and padded to the longest among them.
Batch make_batch(const Dataset& dataset, const std::vector<int64_t>& examples, int64_t max_length);

// Visits the examples of a dataset epoch after epoch, each epoch in a new order drawn from the
// seed; with several ranks, rank r takes every world-th example of the epoch's order, so the
// ranks' shards are disjoint. Its position can be saved and restored exactly.
class EpochSampler {
 public:
  EpochSampler(int64_t dataset_size, uint64_t seed, int64_t rank = 0, int64_t world_size = 1);
  std::vector<int64_t> next(int64_t batch_size);
  struct Position {
    int64_t epoch = 0;
    int64_t offset = 0;  // examples of this rank's shard already taken in the epoch
  };
  Position position() const { return position_; }
  void set_position(Position position);

 private:
  void shuffle();
  int64_t size_;
  uint64_t seed_;
  int64_t rank_, world_size_;
  Position position_;
  std::vector<int64_t> shard_;  // this epoch's order, this rank's share
};

}  // namespace spe::data
