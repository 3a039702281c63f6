#pragma once
// DecoderKind::fused (nn/decoder.h): the recurrent decoder's step written on raw buffers.
#include <memory>
#include <string>

#include "spe/nn/decoder.h"

namespace spe::nn {

// Empty when the fused step covers the model, else what it does not cover (for errors).
std::string fused_decoding_gap(const Model& model);

// The model must be covered (fused_decoding_gap empty), a language model in eval mode.
std::unique_ptr<Decoder> make_fused_decoder(Model model, int64_t batch, OptionalGenerator generator);

}  // namespace spe::nn
