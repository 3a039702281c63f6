#pragma once
// Convolutional Stochastic Positional Encoding (convSPE, Liutkus et al. 2021) over sequences
// (ndim = 1) or images (ndim = 2), with the reference initialisation.
//
// weight_q produces Qbar and weight_k produces Kbar. The authors' code swaps the names (its
// `conv_k` produces Qbar): to load its checkpoints, put its conv_k.weight into weight_q.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "spe/encoding/spe_code.h"
#include "spe/random.h"

namespace spe {

// How the filters are applied to the noise: directly (cost proportional to S per output) or
// through FFTs (cost proportional to the log of the extent); automatic picks FFTs for 1-D
// filters of 2048 taps or more, where they were measured faster for a code and its gradient
// (docs/BENCHMARKS.md); on CPU the direct correlation is a fused op (ops/depthwise_correlation.h).
enum class ConvAlgorithm { automatic, direct, fft };

struct ConvSPEOptions {
  ConvSPEOptions(int64_t heads, int64_t dim) : heads_(heads), dim_(dim) {}
  TORCH_ARG(int64_t, heads);              // H
  TORCH_ARG(int64_t, dim);                // D
  TORCH_ARG(int64_t, ndim) = 1;           // 1: sequences, 2: images (S x S kernels)
  TORCH_ARG(int64_t, kernel_size) = 200;  // S
  TORCH_ARG(int64_t, realizations) = 256; // R
  TORCH_ARG(ConvAlgorithm, algorithm) = ConvAlgorithm::automatic;
};

class ConvSPEImpl : public torch::nn::Cloneable<ConvSPEImpl> {
 public:
  explicit ConvSPEImpl(const ConvSPEOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Draws a code for a sequence {L} or an image {L1, L2} (flattened row-major into N = L1 L2).
  // The noise is a pure function of a key drawn from the generator and of the position
  // (keyed_normal_rows), so that ConvCodeStream can extend the same code one position at a time.
  SPECode forward(at::IntArrayRef shape, c10::optional<int64_t> realizations = c10::nullopt,
                  OptionalGenerator generator = c10::nullopt);
  // The code of the noise drawn with `key` (forward draws the key from its generator).
  SPECode code_for_key(at::IntArrayRef shape, uint64_t key,
                       c10::optional<int64_t> realizations = c10::nullopt) const;

  // Exact E[sum_r Qbar[m] Kbar[m - lag]] for every lag of a sequence or image of this shape:
  // (H, D, 2L - 1) or (H, D, 2L1 - 1, 2L2 - 1), lag 0 in the middle.
  at::Tensor expected_kernel(at::IntArrayRef shape,
                             c10::optional<int64_t> realizations = c10::nullopt) const;

  ConvSPEOptions options;
  at::Tensor weight_q;  // (H, D, S) or (H, D, S, S): the filter that produces Qbar
  at::Tensor weight_k;  // same shape: the filter that produces Kbar
};
TORCH_MODULE(ConvSPE);

// The code of a 1-D convSPE for one noise key, position after position (decoding): next() gives
// the code at positions 0, 1, 2, ... as code_for_key({L}, key) gives it, at a cost of O(S H D R)
// per position whatever the position. Holds S positions of noise; the filters are read at
// construction (a module trained further needs a new stream).
class ConvCodeStream {
 public:
  ConvCodeStream(const ConvSPEImpl& spe, uint64_t key, c10::optional<int64_t> realizations = c10::nullopt);
  SPECode next();  // qbar, kbar: (1, H, D, R)
  int64_t position() const { return position_; }
  uint64_t key() const { return key_; }

 private:
  uint64_t key_;
  int64_t realizations_;
  at::Tensor weight_q_, weight_k_;  // (H, D, S)
  at::Tensor window_;               // (S, H*D, R): the noise under the filters
  int64_t position_ = 0;
};

}  // namespace spe
