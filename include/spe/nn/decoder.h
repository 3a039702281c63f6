#pragma once
// Generation with a causal language model, one token at a time, in two ways that give the same
// logits for the same SPE draw (a generator in the same state):
//   recurrent: the model's own one-position form (Transformer::start_decoding / step): each
//              layer carries the prefix sums of its causal linear attention (a softmax layer
//              carries its keys and values), and the SPE code of each new position comes from
//              the sequence's fixed draw: sineSPE's fused filter reads row t of the code's
//              factors, convSPE slides its filters over noise keyed by position. With linear
//              attention the cost of a token does not depend on its position.
//   fused:     the recurrent step written on raw buffers (weights transposed once, the state
//              and every intermediate kept from token to token): one product per weight matrix
//              and nothing allocated per token. It covers linear attention (elu, relu or
//              FAVOR+ features) with no positional encoding, sinusoidal, learned, decay, rotary or
//              sineSPE (sampled or exact code; place inputs or features) or 1-D convSPE (its
//              keyed noise drawn row by row into a ring under the filters) or a clipped Toeplitz
//              bias (the last clip keys and values in rings), and softmax attention with those or
//              Shaw (keys and values cached, the cache doubled when full:
//              log2 of the length allocations), float32 or float64 on the CPU; position 0 runs
//              the recurrent step, which makes what the sequence keeps.
//   prefix:    recomputes the model over the whole prefix for every token, as the authors'
//              code generates: the reference, O(t) per token.
#include <ATen/core/Tensor.h>

#include <memory>

#include "spe/nn/model.h"
#include "spe/random.h"

namespace spe::nn {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // tokens: (B) int64, the token at position() of each sequence -> (B, V) logits of the next.
  virtual at::Tensor step(const at::Tensor& tokens) = 0;
  int64_t position() const { return position_; }
  int64_t batch() const { return batch_; }

 protected:
  explicit Decoder(int64_t batch) : batch_(batch) {}
  void check_tokens(const at::Tensor& tokens, int64_t vocab_size) const;
  int64_t position_ = 0;
  int64_t batch_;
};

enum class DecoderKind { recurrent, fused, prefix };
inline constexpr Choice<DecoderKind> kDecoderKinds[] = {
    {"recurrent", DecoderKind::recurrent}, {"fused", DecoderKind::fused}, {"prefix", DecoderKind::prefix}};

// The fastest decoder with a constant cost per token for this model: fused where it covers the
// model, recurrent otherwise.
DecoderKind fastest_decoder(const Model& model);

// `batch` sequences decoded together with a language model in eval mode (dropout off). The SPE
// code and gate noise are drawn here from `generator`, in the order the model's forward draws
// them. The recurrent kind covers every attention and encoding of a language model except
// 2-D convSPE (no order of positions to extend); the fused kind throws std::invalid_argument,
// naming what it lacks, for a model it does not cover. The model must not change while decoding.
std::unique_ptr<Decoder> make_decoder(DecoderKind kind, Model model, int64_t batch,
                                      OptionalGenerator generator = c10::nullopt);

}  // namespace spe::nn
