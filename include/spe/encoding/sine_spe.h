#pragma once
// Sinusoidal Stochastic Positional Encoding (sineSPE, Liutkus et al. 2021), with the
// parametrisation and initialisation of the authors' PyTorch code, so that hyperparameters and
// checkpoints carry over. See docs/ARCHITECTURE.md and the formulas in the .cpp file.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "spe/encoding/spe_code.h"
#include "spe/random.h"
#include "spe/util/choices.h"

namespace spe {

// How the frequencies start:
//   reference: freqs ~ N(0, 1) - 4 as the authors' code (periods around 110 positions, 5-95 %:
//              about 23-570), so a code first sees little of neighbouring lags;
//   spread:    geometric angular frequencies over the D K sines of a head, base^(-i / (D K)) rad per
//              position for i = d K + k (as rotary's, base 10000: periods from 2 pi to about 63,000).
// Offsets and gains start as in the reference either way.
enum class SineInit { reference, spread };
inline constexpr Choice<SineInit> kSineInits[] = {{"reference", SineInit::reference}, {"spread", SineInit::spread}};

struct SineSPEOptions {
  SineSPEOptions(int64_t heads, int64_t dim) : heads_(heads), dim_(dim) {}
  TORCH_ARG(int64_t, heads);              // H
  TORCH_ARG(int64_t, dim);                // D, features per head of q and k
  TORCH_ARG(int64_t, sines) = 1;          // K, sinusoids per (head, feature)
  TORCH_ARG(int64_t, realizations) = 256; // R, default number of realizations per code
  TORCH_ARG(SineInit, init) = SineInit::reference;
  TORCH_ARG(SPENoise, noise) = SPENoise::gaussian;  // Z's draw (spe_code.h)
  // Draw, with each feature's 2K rows of Z, one more for a gate's noise (SPECode::gate_noise), in
  // the same orthogonal block when noise is orthogonal; for codes that go through a gated SPEFilter.
  TORCH_ARG(bool, gate_noise) = false;
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

  // The weights of one code (options.noise), Z scaled by the gains: (H, D, 2K, R), with options.gate_noise
  // (H, D, 2K + 1, R) whose last row per feature is the gate's noise, unscaled. Keep it to extend a
  // code position by position (decoding): code(noise, ..) and code_at(positions, noise) are then consistent.
  at::Tensor sample_noise(int64_t realizations, OptionalGenerator generator = c10::nullopt) const;
  // The factors of the code for given noise, covering positions 0 .. length-1.
  SineCodeFactors factors(const at::Tensor& noise, int64_t length) const;
  // The factored code for given noise, covering positions 0 .. length-1, with its gate noise if drawn.
  SPECode code(const at::Tensor& noise, int64_t length) const;
  // The materialised code at arbitrary positions for given noise. positions: (N,).
  SPECode code_at(const at::Tensor& positions, const at::Tensor& noise) const;

  // The exact, noise-free factorisation of the kernel (no realizations): x (B, N, H, D) at
  // positions start .. start + N - 1 -> (B, N, H, D, 2K),
  //   out[b, n, h, d, j] = x[b, n, h, d] lambda_{j/2} Omega_j(n) / sqrt(2K)
  // with Omega_q (offsets) when query_side, Omega_k otherwise. Summed over d and j, the product
  // of a query's and a key's features is sum_d q_md k_nd P_d(m - n) exactly, with
  // P_d(lag) = (1 / 2K) sum_k lambda_k^2 cos(2 pi f_k lag + theta_k) (expected_kernel at R = D).
  at::Tensor exact_features(const at::Tensor& x, bool query_side, int64_t start = 0) const;
  // What multiplies x there: (N, H, D, 2K) = lambda_{j/2} Omega_j(n) / sqrt(2K) at positions
  // start .. start + length - 1, in dtype; exact_features is x.unsqueeze(-1) times it.
  at::Tensor exact_coefficients(int64_t length, bool query_side, int64_t start, at::ScalarType dtype) const;
  // Their part that does not depend on the position: (H, D, 2K) = lambda_{j/2} / sqrt(2K), in dtype.
  at::Tensor exact_scales(at::ScalarType dtype) const;

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
