#include "fused_decoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/decoding_step.h"
#include "kernels/cpu/sine_spe_filter.h"
#include "ops/input_checks.h"
#include "spe/util/threads.h"

namespace spe::nn {
namespace {

namespace cpu = kernels::cpu;

// causal_linear_attention_step's default, which the op-by-op step uses.
constexpr double kAttentionEps = 1e-6;

// Weight matrices from this size up are read by several threads (OpenBLAS's count: the decoding
// thread rule's, spe::choose_decoding_threads): a second core's memory bandwidth helps products
// over weights larger than the caches, not the small ones (docs/BENCHMARKS.md).
constexpr double kParallelBytes = 1 << 20;

at::Tensor kept(const at::Tensor& t) { return t.defined() ? t.detach().contiguous() : t; }

// What the fused step reads of one block, and the layer's state.
struct FusedLayer {
  at::Tensor norm1_weight, norm1_bias, norm2_weight, norm2_bias;  // (E)
  double norm1_eps = 1e-5, norm2_eps = 1e-5;
  at::Tensor query, key, value, output;  // (E, E), as the layers hold them (out, in)
  at::Tensor query_bias, key_bias, value_bias, output_bias;  // (E)
  at::Tensor expand, expand_bias, contract, contract_bias;   // (F, E), (F); (E, F), (E)
  at::Tensor decay;      // (H): g_h, undefined without decay
  at::Tensor favor;      // FAVOR+: the random features' projection (M, F); undefined otherwise
  double favor_scale = 1.0, favor_key_shift = 0.0;
  at::Tensor sine_rows;  // sampled sineSPE: the layer's gated rows (H, D, 2K + 1, R)
  int code = -1;         // sampled sineSPE: which of the decoder's codes the layer reads
  at::Tensor kv, normalizer;  // the state: (B, H, M, Dv), (B, H, M)
};

// A sineSPE code as the fused step reads it: its oscillators and this position's coefficients
// (2, H D, 2K + 1).
struct FusedCode {
  cpu::SineOscillators oscillators;
  at::Tensor coefficients;
};

template <typename T>
class FusedDecoder final : public Decoder {
 public:
  FusedDecoder(Model model, int64_t batch, OptionalGenerator generator)
      : Decoder(batch),
        model_(std::move(model)),
        options_(model_->options.transformer()),
        state_(model_->transformer->start_decoding(generator)),
        threads_(std::max(1, blas_num_threads())) {}

  at::Tensor step(const at::Tensor& tokens) override {
    if (position_ == 0) return first_step(tokens);
    check_raw_tokens(tokens);
    const int64_t B = batch_, E = options_.dim(), F = options_.ffn_dim();
    embed(tokens.data_ptr<int64_t>(), tokens.stride(0), position_);
    for (FusedCode& code : codes_) code.oscillators.coefficients(position_, ptr(code.coefficients));
    if (rotary_frequencies_.defined()) rotary_angles(position_);
    T *x = ptr(x_), *h = ptr(h_), *f = ptr(ffn_);
    for (FusedLayer& layer : layers_) {
      cpu::layer_norm_rows<T>(B, E, x, ptr(layer.norm1_weight), ptr(layer.norm1_bias), layer.norm1_eps, h);
      attend(layer, h);  // h <- the attention's output, (B, E)
      for (int64_t i = 0; i < B * E; ++i) x[i] += h[i];
      cpu::layer_norm_rows<T>(B, E, x, ptr(layer.norm2_weight), ptr(layer.norm2_bias), layer.norm2_eps, h);
      product(B, E, F, h, layer.expand, layer.expand_bias, f);
      cpu::gelu_in_place<T>(B * F, f);
      product(B, F, E, f, layer.contract, layer.contract_bias, h);
      for (int64_t i = 0; i < B * E; ++i) x[i] += h[i];
    }
    cpu::layer_norm_rows<T>(B, E, x, ptr(final_norm_weight_), ptr(final_norm_bias_), final_norm_eps_, h);
    at::Tensor logits = free_logits();
    product(B, E, options_.vocab_size(), h, head_, head_bias_, ptr(logits));
    ++position_;
    return logits;
  }

 private:
  static T* ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

  // y (m, n) = x (m, k) w^T + bias: weights of kParallelBytes or more on threads_ threads.
  void product(int64_t m, int64_t k, int64_t n, const T* x, const at::Tensor& w, const at::Tensor& bias, T* y) const {
    const bool large = static_cast<double>(n * k) * sizeof(T) >= kParallelBytes;
    cpu::rows_by_weight<T>(m, k, n, x, ptr(w), ptr(bias), y, large ? threads_ : 1);
  }
  int64_t sines() const { return options_.positional().sines(); }
  bool sampled_sine() const { return options_.positional().kind() == PositionalKind::sine_spe; }

  // Position 0 runs the op-by-op step, which makes what a sequence keeps (the gated code's rows,
  // the state); the fused step reads them from then on.
  at::Tensor first_step(const at::Tensor& tokens) {
    check_tokens(tokens, options_.vocab_size());
    at::NoGradGuard no_grad;
    const at::Tensor logits = model_->next_token_logits(model_->transformer->step(tokens, state_)).select(1, 0);
    take_weights();
    take_state();
    ++position_;
    return logits;
  }

  void take_weights() {
    const TransformerImpl& t = *model_->transformer;
    const int64_t B = batch_, E = options_.dim();
    embedding_ = kept(t.embedding->weight);
    if (t.sinusoidal) {  // as SinusoidalEncoding::table: column j turns at base^(-2 floor(j / 2) / E)
      sinusoidal_frequencies_ = at::empty({E}, at::kDouble);
      for (int64_t j = 0; j < E; ++j)
        sinusoidal_frequencies_.data_ptr<double>()[j] =
            std::pow(t.sinusoidal->options.base(), -2.0 * static_cast<double>(j / 2) / static_cast<double>(E));
    }
    if (t.learned) learned_ = kept(t.learned->weight.to(embedding_.scalar_type()));
    for (const auto& module : *t.blocks) {
      const TransformerBlockImpl& block = *module->as<TransformerBlock>();
      const SelfAttentionImpl& a = *block.attention;
      FusedLayer layer;
      layer.norm1_weight = kept(block.norm1->weight), layer.norm1_bias = kept(block.norm1->bias);
      layer.norm2_weight = kept(block.norm2->weight), layer.norm2_bias = kept(block.norm2->bias);
      layer.norm1_eps = block.norm1->options.eps(), layer.norm2_eps = block.norm2->options.eps();
      layer.query = kept(a.query->weight), layer.query_bias = kept(a.query->bias);
      layer.key = kept(a.key->weight), layer.key_bias = kept(a.key->bias);
      layer.value = kept(a.value->weight), layer.value_bias = kept(a.value->bias);
      layer.output = kept(a.output->weight), layer.output_bias = kept(a.output->bias);
      layer.expand = kept(block.expand->weight), layer.expand_bias = kept(block.expand->bias);
      layer.contract = kept(block.contract->weight), layer.contract_bias = kept(block.contract->bias);
      if (a.feature_map->options.kind() == FeatureMapKind::favor) {
        const FeatureMapImpl& map = *a.feature_map;
        layer.favor = map.projection.detach().to(embedding_.scalar_type()).contiguous();
        layer.favor_scale = map.options.scale_inputs() ? std::pow(static_cast<double>(map.options.dim()), -0.25) : 1.0;
        layer.favor_key_shift = layer.favor.pow(2).sum(-1).max().item<double>() / 2.0;  // as FeatureMap's keys
        mapped_q_ = at::empty({B, options_.heads(), map.features()}, embedding_.options());
        mapped_k_ = at::empty_like(mapped_q_);
      }
      if (a.decay) layer.decay = at::exp(a.decay->log_decay().detach()).to(embedding_.scalar_type()).contiguous();
      if (a.rotary && !rotary_frequencies_.defined()) {
        rotary_frequencies_ = a.rotary->frequencies().contiguous();  // (D / 2) float64
        const RotaryEncodingOptions& r = a.rotary->options;
        rotary_magnitude_ = r.scaling() == RotaryScaling::yarn ? 0.1 * std::log(r.factor()) + 1.0 : 1.0;
        rotary_cos_ = at::empty({r.dim() / 2}, embedding_.options()), rotary_sin_ = at::empty_like(rotary_cos_);
      }
      layers_.push_back(std::move(layer));
    }
    final_norm_weight_ = kept(t.final_norm->weight), final_norm_bias_ = kept(t.final_norm->bias);
    final_norm_eps_ = t.final_norm->options.eps();
    if (model_->output_layer) {
      head_ = kept(model_->output_layer->weight), head_bias_ = kept(model_->output_layer->bias);
    } else {
      head_ = kept(t.embedding->weight.narrow(0, 0, options_.vocab_size()));
    }
    const at::TensorOptions o = embedding_.options();
    x_ = at::empty({B, E}, o), h_ = at::empty({B, E}, o), ffn_ = at::empty({B, options_.ffn_dim()}, o);
    q_ = at::empty({B, E}, o), k_ = at::empty({B, E}, o), v_ = at::empty({B, E}, o), attention_ = at::empty({B, E}, o);
    if (sampled_sine()) {
      const int64_t r = options_.positional().realizations(), h = options_.heads();
      filtered_q_ = at::empty({B, h, r}, o), filtered_k_ = at::empty({B, h, r}, o);
    }
  }

  // The state after position 0, and each layer's gated sine rows and code.
  void take_state() {
    auto add_code = [&](const SPECodeStream& stream) {
      const SineCodeFactors& factors = *stream.sine_factors();
      const int64_t features = options_.dim(), k = sines();
      const at::Tensor frequencies = factors.frequencies.to(at::kDouble).reshape({features, k}).contiguous();
      const at::Tensor offsets = factors.offsets.to(at::kDouble).reshape({features, k}).contiguous();
      codes_.push_back({cpu::SineOscillators(features, k, frequencies.data_ptr<double>(), offsets.data_ptr<double>()),
                        at::empty({2, features, 2 * k + 1}, embedding_.options())});
      return static_cast<int>(codes_.size()) - 1;
    };
    const int shared = state_.code ? add_code(*state_.code) : -1;
    for (size_t i = 0; i < layers_.size(); ++i) {
      AttentionState& s = state_.layers[i];
      layers_[i].kv = s.linear.kv.contiguous(), layers_[i].normalizer = s.linear.normalizer.contiguous();
      if (sampled_sine()) {
        layers_[i].sine_rows = s.gated_rows.contiguous();
        layers_[i].code = s.code ? add_code(*s.code) : shared;
      }
    }
  }

  void check_raw_tokens(const at::Tensor& tokens) const {
    TORCH_CHECK(tokens.defined() && tokens.device().is_cpu() && tokens.dim() == 1 && tokens.size(0) == batch_ &&
                    tokens.scalar_type() == at::kLong,
                "decoder: tokens must be (B) int64 on the CPU with B = ", batch_, ", got ",
                tokens.defined() ? tokens.sizes() : at::IntArrayRef{}, " ",
                tokens.defined() ? tokens.scalar_type() : at::kLong);
    const int64_t* ids = tokens.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch_; ++b) {
      const int64_t id = ids[b * tokens.stride(0)];
      TORCH_CHECK(id >= 0 && id < options_.vocab_size(), "decoder: token ids must lie in [0, ", options_.vocab_size(),
                  "), got ", id);
    }
  }

  // x_ (B, E) <- the embeddings of the tokens (ids[b * stride]) at `position`, with the absolute encoding.
  void embed(const int64_t* ids, int64_t stride, int64_t position) {
    const int64_t E = options_.dim();
    T* x = ptr(x_);
    const T* table = ptr(embedding_);
    const T* learned = nullptr;  // the position's row of the learned table
    if (learned_.defined()) {
      TORCH_CHECK(position < learned_.size(0), "LearnedEncoding: position ", position,
                  " requested but the table holds max_length = ", learned_.size(0), " positions");
      learned = ptr(learned_) + position * E;
    }
    const double* frequencies = sinusoidal_frequencies_.defined() ? sinusoidal_frequencies_.data_ptr<double>() : nullptr;
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t j = 0; j < E; ++j) {
        T value = table[ids[b * stride] * E + j];
        if (learned) value += learned[j];
        if (frequencies) {  // sin on even columns, cos on odd
          const double angle = static_cast<double>(position) * frequencies[j];
          value += static_cast<T>(j % 2 == 0 ? std::sin(angle) : std::cos(angle));
        }
        x[b * E + j] = value;
      }
  }

  void rotary_angles(int64_t position) {
    const double* theta = rotary_frequencies_.data_ptr<double>();
    T *cos = ptr(rotary_cos_), *sin = ptr(rotary_sin_);
    for (int64_t i = 0; i < rotary_cos_.size(0); ++i) {
      const double angle = static_cast<double>(position) * theta[i];
      cos[i] = static_cast<T>(rotary_magnitude_ * std::cos(angle));
      sin[i] = static_cast<T>(rotary_magnitude_ * std::sin(angle));
    }
  }

  // h (B, E), the block's normed input -> h, the attention's output (B, E).
  void attend(FusedLayer& layer, T* h) {
    const int64_t B = batch_, E = options_.dim(), H = options_.heads(), D = E / H;
    T *q = ptr(q_), *k = ptr(k_), *v = ptr(v_);
    product(B, E, E, h, layer.query, layer.query_bias, q);
    product(B, E, E, h, layer.key, layer.key_bias, k);
    product(B, E, E, h, layer.value, layer.value_bias, v);
    if (rotary_frequencies_.defined()) {
      cpu::rotate_pairs<T>(B * H, D, ptr(rotary_cos_), ptr(rotary_sin_), q);
      cpu::rotate_pairs<T>(B * H, D, ptr(rotary_cos_), ptr(rotary_sin_), k);
    }
    int64_t features = D;
    if (layer.sine_rows.defined()) {  // q, k (B, H, D) -> filtered (B, H, R)
      const int64_t R = options_.positional().realizations();
      const cpu::SineFilterShape shape{B, 1, H, D, sines(), R, 0};
      const T* coefficients = ptr(codes_[layer.code].coefficients);
      cpu::sine_spe_filter_position<T>(shape, q, coefficients, ptr(layer.sine_rows), ptr(filtered_q_));
      cpu::sine_spe_filter_position<T>(shape, k, coefficients + H * D * (2 * sines() + 1), ptr(layer.sine_rows),
                                       ptr(filtered_k_));
      q = ptr(filtered_q_), k = ptr(filtered_k_), features = R;
    }
    if (layer.favor.defined()) {  // (B H, F) -> (B H, M)
      const int64_t M = layer.favor.size(0);
      cpu::favor_features<T>(B * H, features, M, q, ptr(layer.favor), layer.favor_scale, true, 0.0, ptr(mapped_q_));
      cpu::favor_features<T>(B * H, features, M, k, ptr(layer.favor), layer.favor_scale, false, layer.favor_key_shift,
                             ptr(mapped_k_));
      q = ptr(mapped_q_), k = ptr(mapped_k_), features = M;
    } else {
      const bool elu = options_.attention().feature_map() == FeatureMapKind::elu;
      cpu::feature_map_in_place<T>(elu, B * H * features, q);
      cpu::feature_map_in_place<T>(elu, B * H * features, k);
    }
    T* attention = ptr(attention_);  // (B, H, D)
    cpu::linear_attention_step<T>(B, H, features, D, q, k, v, ptr(layer.decay), kAttentionEps, ptr(layer.kv),
                                  ptr(layer.normalizer), attention);
    product(B, E, E, attention, layer.output, layer.output_bias, h);
  }

  // One of two logits tensors that the caller no longer holds (a new one when it holds both).
  at::Tensor free_logits() {
    for (at::Tensor& logits : logits_)
      if (!logits.defined() || logits.use_count() == 1) {
        if (!logits.defined()) logits = at::empty({batch_, options_.vocab_size()}, embedding_.options());
        return logits;
      }
    return at::empty({batch_, options_.vocab_size()}, embedding_.options());
  }

  Model model_;
  TransformerOptions options_;
  DecodingState state_;  // the op-by-op state of position 0
  int threads_;          // for the large weight products
  std::vector<FusedLayer> layers_;
  std::vector<FusedCode> codes_;
  at::Tensor embedding_, learned_, final_norm_weight_, final_norm_bias_, head_, head_bias_;
  double final_norm_eps_ = 1e-5, rotary_magnitude_ = 1.0;
  at::Tensor sinusoidal_frequencies_, rotary_frequencies_, rotary_cos_, rotary_sin_;
  at::Tensor x_, h_, ffn_, q_, k_, v_, attention_, filtered_q_, filtered_k_, mapped_q_, mapped_k_;  // the step's buffers
  at::Tensor logits_[2];
};

}  // namespace

std::string fused_decoding_gap(const Model& model) {
  const TransformerOptions& o = model->options.transformer();
  const PositionalOptions& p = o.positional();
  if (!ops::fused_kernel_takes(model->transformer->embedding->weight)) return "float32 or float64 weights on the CPU";
  if (o.attention().kind() == AttentionKind::softmax) return "linear attention (elu, relu or FAVOR+ features)";
  switch (p.kind()) {
    case PositionalKind::none: case PositionalKind::sinusoidal: case PositionalKind::learned:
    case PositionalKind::decay:
      return "";
    case PositionalKind::rotary:
      return p.place() == PositionalPlace::inputs ? "" : "rotary at place inputs";
    case PositionalKind::sine_spe:
      if (p.code() != SPECodeKind::sampled) return "sineSPE's sampled code";
      return p.place() == PositionalPlace::inputs ? "" : "sineSPE at place inputs";
    default:
      return "positional kind none, sinusoidal, learned, rotary, sine_spe or decay";
  }
}

std::unique_ptr<Decoder> make_fused_decoder(Model model, int64_t batch, OptionalGenerator generator) {
  const std::string gap = fused_decoding_gap(model);
  if (!gap.empty())
    throw std::invalid_argument(fmt::format("the fused decoder needs {}; the recurrent decoder takes this model", gap));
  if (model->transformer->embedding->weight.scalar_type() == at::kDouble)
    return std::make_unique<FusedDecoder<double>>(std::move(model), batch, generator);
  return std::make_unique<FusedDecoder<float>>(std::move(model), batch, generator);
}

}  // namespace spe::nn
