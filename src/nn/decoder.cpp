#include "spe/nn/decoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

#include "fused_decoder.h"

namespace spe::nn {

void Decoder::check_tokens(const at::Tensor& tokens, int64_t vocab_size) const {
  TORCH_CHECK(tokens.dim() == 1 && tokens.size(0) == batch_ && tokens.scalar_type() == at::kLong,
              "decoder: tokens must be (B) int64 with B = ", batch_, ", got ", tokens.sizes(), " ",
              tokens.scalar_type());
  TORCH_CHECK(tokens.min().item<int64_t>() >= 0 && tokens.max().item<int64_t>() < vocab_size,
              "decoder: token ids must lie in [0, ", vocab_size, ")");
}

namespace {

void check_decodable(const Model& model, int64_t batch) {
  if (model->options.kind() != ModelKind::language_model)
    throw std::invalid_argument(fmt::format("decoding needs a language model, this model is a {}",
                                            choice_name(model->options.kind(), kModelKinds)));
  if (model->is_training())
    throw std::invalid_argument("decoding: put the model in eval mode first (model->eval()), or dropout makes every "
                                "step random");
  if (batch < 1) throw std::invalid_argument(fmt::format("decoding: batch is {}, expected at least 1", batch));
}

// Each step runs the model's own one-position form (TransformerImpl::step) on the state it made.
class RecurrentDecoder final : public Decoder {
 public:
  RecurrentDecoder(Model model, int64_t batch, OptionalGenerator generator)
      : Decoder(batch), model_(std::move(model)), state_(model_->transformer->start_decoding(generator)) {}

  at::Tensor step(const at::Tensor& tokens) override {
    check_tokens(tokens, model_->options.transformer().vocab_size());
    at::NoGradGuard no_grad;
    const at::Tensor hidden = model_->transformer->step(tokens, state_);  // (B, 1, E)
    ++position_;
    return model_->next_token_logits(hidden).select(1, 0);
  }

 private:
  Model model_;
  DecodingState state_;
};

class PrefixDecoder final : public Decoder {
 public:
  PrefixDecoder(Model model, int64_t batch, OptionalGenerator generator)
      : Decoder(batch),
        model_(std::move(model)),
        // Every step replays the same draws: a private generator, restored before each forward.
        generator_(generator ? copy_generator(*generator) : make_generator(draw_key())) {}

  at::Tensor step(const at::Tensor& tokens) override {
    check_tokens(tokens, model_->options.transformer().vocab_size());
    at::NoGradGuard no_grad;
    prefix_ = prefix_.defined() ? at::cat({prefix_, tokens.unsqueeze(1)}, 1) : tokens.unsqueeze(1);
    ++position_;
    return model_->forward(prefix_, {}, {}, {}, copy_generator(generator_)).select(1, -1);
  }

 private:
  Model model_;
  at::Generator generator_;
  at::Tensor prefix_;  // (B, t) the tokens so far
};

}  // namespace

DecoderKind fastest_decoder(const Model& model) {
  return fused_decoding_gap(model).empty() ? DecoderKind::fused : DecoderKind::recurrent;
}

std::unique_ptr<Decoder> make_decoder(DecoderKind kind, Model model, int64_t batch, OptionalGenerator generator) {
  check_decodable(model, batch);
  if (kind == DecoderKind::prefix) return std::make_unique<PrefixDecoder>(std::move(model), batch, generator);
  if (kind == DecoderKind::fused) return make_fused_decoder(std::move(model), batch, generator);
  return std::make_unique<RecurrentDecoder>(std::move(model), batch, generator);
}

}  // namespace spe::nn
