#include "spe/data/batch.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>

namespace spe::data {
namespace {

// tokens, padding: (B, N) for one field of the examples.
std::pair<at::Tensor, at::Tensor> pad_field(const Dataset& dataset, const std::vector<int64_t>& examples,
                                            int64_t field, int64_t max_length) {
  int64_t longest = 1;
  for (int64_t e : examples)
    longest = std::max<int64_t>(longest, std::min<int64_t>(max_length, dataset.sequence(e, field).size));
  const auto batch = static_cast<int64_t>(examples.size());
  at::Tensor tokens = at::zeros({batch, longest}, at::kLong);
  at::Tensor padding = at::zeros({batch, longest}, at::kBool);
  auto t = tokens.accessor<int64_t, 2>();
  auto p = padding.accessor<bool, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const TokenSpan span = dataset.sequence(examples[static_cast<size_t>(b)], field);
    const int64_t n = std::min<int64_t>(max_length, span.size);
    for (int64_t i = 0; i < n; ++i) {
      t[b][i] = span.data[i];
      p[b][i] = true;
    }
  }
  return {tokens, padding};
}

}  // namespace

Batch make_batch(const Dataset& dataset, const std::vector<int64_t>& examples, int64_t max_length) {
  if (examples.empty()) throw std::invalid_argument("make_batch: no examples");
  if (max_length < 1) throw std::invalid_argument(fmt::format("make_batch: max_length is {}, expected >= 1", max_length));
  Batch batch;
  std::tie(batch.tokens, batch.padding) = pad_field(dataset, examples, 0, max_length);
  if (dataset.info().fields == 2) std::tie(batch.tokens_b, batch.padding_b) = pad_field(dataset, examples, 1, max_length);
  batch.labels = at::empty({static_cast<int64_t>(examples.size())}, at::kLong);
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (size_t b = 0; b < examples.size(); ++b) labels[b] = dataset.label(examples[b]);
  return batch;
}

EpochSampler::EpochSampler(int64_t dataset_size, uint64_t seed, int64_t rank, int64_t world_size)
    : size_(dataset_size), seed_(seed), rank_(rank), world_size_(world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw std::invalid_argument(fmt::format("EpochSampler: rank {} of world size {}", rank, world_size));
  if (dataset_size < world_size)
    throw std::invalid_argument(
        fmt::format("EpochSampler: {} examples cannot be shared among {} ranks", dataset_size, world_size));
  shuffle();
}

void EpochSampler::shuffle() {
  std::vector<int64_t> order(static_cast<size_t>(size_));
  std::iota(order.begin(), order.end(), 0);
  std::seed_seq seeds{static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32),
                      static_cast<uint32_t>(position_.epoch)};
  std::mt19937_64 rng(seeds);
  std::shuffle(order.begin(), order.end(), rng);
  // Every rank gets the same number of examples: the tail that does not divide is dropped.
  const int64_t per_rank = size_ / world_size_;
  shard_.clear();
  for (int64_t i = 0; i < per_rank; ++i) shard_.push_back(order[static_cast<size_t>(i * world_size_ + rank_)]);
}

std::vector<int64_t> EpochSampler::next(int64_t batch_size) {
  if (batch_size < 1) throw std::invalid_argument(fmt::format("EpochSampler::next: batch size {}", batch_size));
  std::vector<int64_t> examples;
  while (static_cast<int64_t>(examples.size()) < batch_size) {
    if (position_.offset == static_cast<int64_t>(shard_.size())) {
      position_ = {position_.epoch + 1, 0};
      shuffle();
    }
    examples.push_back(shard_[static_cast<size_t>(position_.offset++)]);
  }
  return examples;
}

void EpochSampler::set_position(Position position) {
  if (position.epoch < 0 || position.offset < 0 || position.offset > size_ / world_size_)
    throw std::invalid_argument(fmt::format("EpochSampler: position (epoch {}, offset {}) outside a shard of {}",
                                            position.epoch, position.offset, size_ / world_size_));
  position_ = position;
  shuffle();
}

}  // namespace spe::data
