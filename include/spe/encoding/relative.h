#pragma once
// Relative position representations of Shaw, Uszkoreit and Vaswani (2018): learned vectors
// w^K_r, w^V_r for the clipped distance r = clamp(j - i, -k, k), shared across heads, added to
// the keys and values inside softmax attention. Computed in O(N k D) memory for the tables'
// products (q_i . w_r for the 2k + 1 distinct r, then spread over the keys), never as an N x N x D
// tensor; on CPU in float32 and float64 the spreading and its adjoint are fused kernels
// (ops/relative_buckets.h), elsewhere ATen's gather and scatter_add over bucket_index.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace spe {

struct RelativePositionOptions {
  RelativePositionOptions(int64_t dim, int64_t clip) : dim_(dim), clip_(clip) {}
  TORCH_ARG(int64_t, dim);          // D, features per head
  TORCH_ARG(int64_t, clip);         // k: distances are clipped to [-k, k]
  TORCH_ARG(bool, on_values) = true;  // also learn w^V (a^V on the values)
};

class RelativePositionImpl : public torch::nn::Cloneable<RelativePositionImpl> {
 public:
  explicit RelativePositionImpl(const RelativePositionOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // The table row of every (query i, key j) pair: clamp(j - i, -k, k) + k, (Nq, Nk) int64.
  // Queries and keys are aligned at their ends when Nq < Nk (decoding with a cache).
  at::Tensor bucket_index(int64_t query_length, int64_t key_length) const;

  // q: (B, Nq, H, D) -> q_i . w^K_{c(j - i)}: (B, H, Nq, Nk), not yet scaled.
  at::Tensor key_logits(const at::Tensor& q, int64_t key_length) const;
  // weights: (B, H, Nq, Nk) attention probabilities -> sum_j weights_ij w^V_{c(j - i)}: (B, Nq, H, D).
  at::Tensor value_term(const at::Tensor& weights) const;

  RelativePositionOptions options;
  at::Tensor key_table;    // (2k + 1, D)
  at::Tensor value_table;  // (2k + 1, D), undefined unless on_values
};
TORCH_MODULE(RelativePosition);

}  // namespace spe
