#pragma once
// Sinusoidal Stochastic Positional Encoding (sineSPE, Liutkus et al. 2021), with the
// parametrisation and initialisation of the authors' PyTorch code, so that hyperparameters and
// checkpoints carry over. See docs/ARCHITECTURE.md and the formulas in the .cpp file.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "spe/encoding/spe_code.h"
#include "spe/random.h"

namespace spe {

struct SineSPEOptions {
  SineSPEOptions(int64_t heads, int64_t dim) : heads_(heads), dim_(dim) {}
  TORCH_ARG(int64_t, heads);              // H
  TORCH_ARG(int64_t, dim);                // D, features per head of q and k
  TORCH_ARG(int64_t, sines) = 1;          // K, sinusoids per (head, feature)
  TORCH_ARG(int64_t, realizations) = 256; // R, default number of realizations per code
};

class SineSPEImpl : public torch::nn::Cloneable<SineSPEImpl> {
 public:
  explicit SineSPEImpl(const SineSPEOptions& options);
  SineSPEImpl(int64_t heads, int64_t dim) : SineSPEImpl(SineSPEOptions(heads, dim)) {}

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Draws a code for positions 0 .. length-1 with R = realizations (or options.realizations()),
  // held as its factors: SPEFilter applies it without materialising it; code.materialise()
  // gives qbar and kbar.
  SPECode forward(int64_t length, c10::optional<int64_t> realizations = c10::nullopt,
                  OptionalGenerator generator = c10::nullopt);

  // The Gaussian weights of one code, Z scaled by the gains: (H, D, 2K, R). Keep it to extend
  // a code position by position (decoding): code_at(positions, noise) is then consistent.
  at::Tensor sample_noise(int64_t realizations, OptionalGenerator generator = c10::nullopt) const;
  // The factors of the code for given noise, covering positions 0 .. length-1.
  SineCodeFactors factors(const at::Tensor& noise, int64_t length) const;
  // The materialised code at arbitrary positions for given noise. positions: (N,).
  SPECode code_at(const at::Tensor& positions, const at::Tensor& noise) const;

  // Exact E[sum_r Qbar[m,h,d,r] Kbar[m-lag,h,d,r]] for lag in [-(length-1), length-1]:
  // (H, D, 2 length - 1), all scaling constants included.
  at::Tensor expected_kernel(int64_t length, c10::optional<int64_t> realizations = c10::nullopt) const;

  SineSPEOptions options;
  at::Tensor freqs;    // (H, D, K) raw: f = sigmoid(freqs) / 2
  at::Tensor offsets;  // (H, D, K) phase offsets theta of the query side
  at::Tensor gains;    // (H, D, K) raw: lambda = softplus(gains)
};
TORCH_MODULE(SineSPE);

}  // namespace spe
