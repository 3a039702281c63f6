#pragma once
// A learned bias b_h(m - n) of each head on the relative distance, clipped to [-clip, clip] as
// Shaw's: under kernelized (linear) attention the weight of the pair (m, n) is multiplied by
// exp(b_h(m - n)), a Toeplitz matrix applied by FFT in O(N log N) per feature (Luo et al.,
// NeurIPS 2021; linear.h: toeplitz_linear_attention); under softmax, b is added to the scores.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace spe {

struct ToeplitzBiasOptions {
  explicit ToeplitzBiasOptions(int64_t heads) : heads_(heads) {}
  TORCH_ARG(int64_t, heads);      // H: one bias per head
  TORCH_ARG(int64_t, clip) = 32;  // distances beyond +-clip share the bias of +-clip
};

class ToeplitzBiasImpl : public torch::nn::Cloneable<ToeplitzBiasImpl> {
 public:
  explicit ToeplitzBiasImpl(const ToeplitzBiasOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // b_h(lag) for lags -(N - 1) .. N - 1: (H, 2 length - 1).
  at::Tensor lag_bias(int64_t length) const;
  // What a query at m sees of a key at n under linear attention, exp(b_h(m - n)): (H, 2 length - 1).
  at::Tensor kernel(int64_t length) const;
  // For softmax attention: b_h(m - n) for queries at start .. start + Nq - 1 and keys at
  // 0 .. Nk - 1: (H, Nq, Nk).
  at::Tensor score_bias(int64_t start, int64_t queries, int64_t keys) const;

  ToeplitzBiasOptions options;
  at::Tensor bias;  // (H, 2 clip + 1): b for lags -clip .. clip, starting at 0 (no position)
};
TORCH_MODULE(ToeplitzBias);

}  // namespace spe
