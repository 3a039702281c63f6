#pragma once
// Exponential decay of the attention weight with the distance (RetNet, Sun et al. 2023; causal
// ALiBi has the same shape): head h weighs the pair (m, n) by g_h^|m - n|, 0 < g_h < 1. Exact
// under linear attention (linear.h: decayed_linear_attention, a chunked scan with a decayed
// state) and under softmax (score_bias: |m - n| log g_h added to the scores).
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace spe {

struct DecayOptions {
  explicit DecayOptions(int64_t heads) : heads_(heads) {}
  TORCH_ARG(int64_t, heads);             // H: one decay per head
  TORCH_ARG(bool, learnable) = false;    // train the decays (else fixed at their start)
};

class DecayImpl : public torch::nn::Cloneable<DecayImpl> {
 public:
  explicit DecayImpl(const DecayOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // log g: (H,), every entry < 0 (g = sigmoid(logits)).
  at::Tensor log_decay() const;
  // What a query at m sees of a key at n, g_h^|m - n| for lags m - n in [-(N - 1), N - 1]:
  // (H, 2 length - 1).
  at::Tensor kernel(int64_t length) const;
  // For softmax attention: |m - n| log g_h for queries at start .. start + Nq - 1 and keys at
  // 0 .. Nk - 1: (H, Nq, Nk), added to the scaled scores.
  at::Tensor score_bias(int64_t start, int64_t queries, int64_t keys) const;

  DecayOptions options;
  // (H,): g_h = sigmoid(logits_h), starting at 1 - 2^-(5 + 7 h / (H - 1)) (RetNet's 1 - 2^-(5..12)
  // for 8 heads): heads that look from about 32 to about 4,096 positions back.
  at::Tensor logits;
};
TORCH_MODULE(Decay);

}  // namespace spe
