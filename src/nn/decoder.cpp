#include "spe/nn/decoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>
#include <vector>

#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"

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

// The SPE code of each new position, from one draw: next() gives positions 0, 1, 2, ... in turn
// as (1, H, D, R) materialised codes.
class PositionCodes {
 public:
  // Draws what TransformerImpl::forward's draw_code draws, from the same generator.
  PositionCodes(SineSPE& sine, ConvSPE& conv, int64_t realizations, OptionalGenerator generator) {
    if (sine) {
      sine_ = sine;
      noise_ = sine->sample_noise(realizations, generator);
    } else {
      conv_ = std::make_unique<ConvCodeStream>(*conv, draw_key(generator), realizations);
    }
  }
  SPECode next() {
    if (conv_) return conv_->next();
    return sine_->code_at(at::full({1}, position_++, at::kLong), noise_);
  }

 private:
  SineSPE sine_{nullptr};
  at::Tensor noise_;  // (H, D, 2K, R)
  std::unique_ptr<ConvCodeStream> conv_;
  int64_t position_ = 0;
};

class RecurrentDecoder final : public Decoder {
 public:
  RecurrentDecoder(Model model, int64_t batch, OptionalGenerator generator) : Decoder(batch), model_(std::move(model)) {
    const TransformerOptions& o = model_->options.transformer();
    if (o.positional().kind() == PositionalKind::toeplitz && o.attention().kind() != AttentionKind::softmax)
      throw std::invalid_argument("recurrent decoding: toeplitz positions under linear attention have no recurrent "
                                  "state (each earlier key's weight differs for every later query); use the prefix "
                                  "decoder");
    if (o.positional().kind() == PositionalKind::conv_spe && o.positional().conv_ndim() != 1)
      throw std::invalid_argument("recurrent decoding: 2-D convSPE has no order of positions to extend; use the "
                                  "prefix decoder");
    const int64_t r = o.positional().realizations();
    Transformer& t = model_->transformer;
    // A sampled code draws as TransformerImpl::forward does; the exact sineSPE code draws nothing.
    sampled_ = draws_spe_code(o);
    if (t->sine_spe) shared_sine_ = t->sine_spe.get();
    if (sampled_ && (t->sine_spe || t->conv_spe))
      shared_codes_ = std::make_unique<PositionCodes>(t->sine_spe, t->conv_spe, r, generator);
    const at::ScalarType dtype = t->embedding->weight.scalar_type();
    for (const auto& block : *t->blocks) {
      SelfAttentionImpl& attention = *block->as<TransformerBlock>()->attention;
      LayerState layer;
      if (sampled_ && (attention.sine_spe || attention.conv_spe))
        layer.own_codes = std::make_unique<PositionCodes>(attention.sine_spe, attention.conv_spe, r, generator);
      if (sampled_) layer.gate_noise = attention.spe_filter->sample_gate_noise(r, dtype, generator);
      layers_.push_back(std::move(layer));
    }
  }

  at::Tensor step(const at::Tensor& tokens) override {
    Transformer& t = model_->transformer;
    check_tokens(tokens, t->options.vocab_size());
    at::NoGradGuard no_grad;
    at::Tensor x = t->embed(tokens.unsqueeze(1), position_);  // (B, 1, E)
    const SPECode shared = shared_codes_ ? shared_codes_->next() : SPECode();
    for (size_t i = 0; i < layers_.size(); ++i) {
      TransformerBlockImpl& block = *t->blocks[i]->as<TransformerBlock>();
      x = block.feed_forward(x + attend(*block.attention, block.norm1(x), layers_[i], shared));
    }
    ++position_;
    return model_->next_token_logits(t->final_norm(x)).select(1, 0);
  }

 private:
  struct LayerState {
    std::unique_ptr<PositionCodes> own_codes;  // the layer's own SPE, when the code is not shared
    at::Tensor gate_noise;                     // (H, D, R), when gated
    LinearAttentionState linear;               // linear attention: the prefix sums
    at::Tensor keys, values;                   // softmax attention: (B, t, H, D)
  };

  // x: (B, 1, E), the normed input at position_ -> the attention output (B, 1, E).
  at::Tensor attend(SelfAttentionImpl& attention, const at::Tensor& x, LayerState& layer, const SPECode& shared) {
    SPECode gated;  // sampled SPE: this position's code after the layer's gate
    if (sampled_) gated = attention.spe_filter->gated_code(layer.own_codes ? layer.own_codes->next() : shared,
                                                           layer.gate_noise);
    const AttentionInputs in = attention.prepare(x, position_, sampled_ ? &gated : nullptr, shared_sine_);
    at::Tensor out;  // (B, 1, H, Dv)
    if (!attention.feature_map) {
      layer.keys = layer.keys.defined() ? at::cat({layer.keys, in.k}, 1) : in.k;
      layer.values = layer.values.defined() ? at::cat({layer.values, in.v}, 1) : in.v;
      out = softmax_attention(in.q, layer.keys, layer.values, AttentionMask::none(),
                              attention.relative ? attention.relative.get() : nullptr,
                              attention.score_bias(position_, 1, layer.keys.size(1)));
    } else {
      const at::Tensor phi_q = in.q.select(1, 0), phi_k = in.k.select(1, 0), v = in.v.select(1, 0);  // (B, H, M)
      const bool positioned = in.numerator.query.defined();
      if (!layer.linear.kv.defined())
        layer.linear = LinearAttentionState::zeros(batch_, phi_k.size(1), phi_k.size(2), v.size(2), v.options(),
                                                   positioned ? in.numerator.key.size(3) : 0);
      if (attention.decay)
        out = decayed_causal_linear_attention_step(phi_q, phi_k, v, attention.decay->log_decay(), layer.linear);
      else
        out = positioned ? causal_linear_attention_step(phi_q, phi_k, v,
                                                        {in.numerator.query.select(1, 0), in.numerator.key.select(1, 0)},
                                                        layer.linear)
                         : causal_linear_attention_step(phi_q, phi_k, v, layer.linear);
      out = out.unsqueeze(1);
    }
    return attention.output(out.flatten(2));
  }

  Model model_;
  bool sampled_ = false;                // the model's SPE draws a code (draws_spe_code)
  SineSPEImpl* shared_sine_ = nullptr;  // the model's shared sineSPE, if any
  std::unique_ptr<PositionCodes> shared_codes_;
  std::vector<LayerState> layers_;
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

std::unique_ptr<Decoder> make_decoder(DecoderKind kind, Model model, int64_t batch, OptionalGenerator generator) {
  check_decodable(model, batch);
  if (kind == DecoderKind::prefix) return std::make_unique<PrefixDecoder>(std::move(model), batch, generator);
  return std::make_unique<RecurrentDecoder>(std::move(model), batch, generator);
}

}  // namespace spe::nn
