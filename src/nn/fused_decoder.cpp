#include "fused_decoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "attention_layout.h"
#include "encoding/conv_code.h"
#include "kernels/cpu/decoding_step.h"
#include "kernels/cpu/sine_spe_filter.h"
#include "ops/input_checks.h"
#include "spe/util/threads.h"

namespace spe::nn {
namespace {

namespace cpu = kernels::cpu;

// causal_linear_attention_step's default, which the op-by-op step uses.
constexpr double kAttentionEps = 1e-6;

// Softmax's caches start with room for this many positions, then double.
constexpr int64_t kFirstCapacity = 256;

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
  at::Tensor sine_rows;    // sampled sineSPE: the layer's gated rows (H, F, 2K + 1, R)
  at::Tensor exact_scale;  // exact sineSPE: each coefficient's lambda and gate (H F, J)
  int code = -1;           // sineSPE, convSPE: which of the decoder's codes the layer reads
  at::Tensor gate_keep, gate_noise;  // convSPE, gated: sqrt(1 - s) (H F), sqrt(s) eps (H F, R)
  at::Tensor kv, normalizer;  // linear attention's state: (B, H, P, Dv), (B, H, M)
  at::Tensor keys, values;    // softmax attention's caches: (B, H, capacity / kKeyTile, P, kKeyTile), (B, H, capacity, Dv)
  at::Tensor log_decay;     // softmax + decay: (H)
  at::Tensor clipped_bias;  // softmax + Toeplitz: its lags 0 .. clip (B, H, clip + 1); + Shaw: q . a^K, scaled
  at::Tensor toeplitz_weights;        // linear + Toeplitz: e^(bias) of lags 0 .. clip (H, clip + 1)
  at::Tensor key_ring, value_ring;    //   the last clip positions' phi_k and v: (B, H, clip, M), (B, H, clip, Dv)
  at::Tensor shaw_keys, shaw_values;  // softmax + Shaw: a^K, a^V of lags 0 .. clip (clip + 1, D), a^V undefined
  int64_t clip = 0;                   //   without its value table
};

// A sineSPE code as the fused step reads it: its oscillators and this position's coefficients
// (2, H F, 2K + 1) for the F features it positions (D at place inputs, M at place features).
struct FusedCode {
  cpu::SineOscillators oscillators;
  at::Tensor coefficients;
};

// A 1-D convSPE code made position after position (ConvCodeStream's values, nothing allocated):
// the noise under the filters kept in a ring of S rows, row t + S + j of the keyed noise in slot
// (t + j) mod S, each new row drawn in place; the code of position t is
//   code[f, r] = scale sum_j w[f, j] Z[t + S + j][f, r]   for the H F features f, both filters.
template <typename T>
class FusedConvCode {
 public:
  // Ready for position `start`; weights (H, F, S), the module's.
  FusedConvCode(const ConvSPEImpl& conv, uint64_t key, int64_t realizations, int64_t start)
      : key_(key),
        S_(conv.options.kernel_size()),
        features_(conv.options.heads() * conv.options.dim()),
        R_(realizations),
        scale_(detail::conv_code_scale(R_, conv.options.dim())),
        weight_q_(kept(conv.weight_q.reshape({features_, S_}))),
        weight_k_(kept(conv.weight_k.reshape({features_, S_}))),
        ring_(at::empty({S_, features_ * R_}, weight_q_.options())),
        scratch_(make_generator(0)),
        qbar_(at::empty({features_, R_}, weight_q_.options())),
        kbar_(at::empty_like(qbar_)) {
    for (int64_t i = 0; i < S_; ++i) slots_.push_back(ring_.select(0, i));
    const int64_t first = detail::conv_first_noise_row(start, S_);
    for (int64_t j = 0; j < S_; ++j) keyed_normal_row_into(key_, first + j, slots_[(start + j) % S_], scratch_);
    next_ = start;
  }

  // The code of `position` (the one after the last) into qbar(), kbar() (H F, R).
  void advance(int64_t position) {
    TORCH_CHECK(position == next_, "FusedConvCode: position ", position, " after ", next_ - 1);
    code(ptr(weight_q_), ptr(qbar_));
    code(ptr(weight_k_), ptr(kbar_));
    at::Tensor& spent = slots_[position % S_];  // Z[t + S]: the next position needs Z[t + 2S] instead
    keyed_normal_row_into(key_, detail::conv_last_noise_row(position + 1, S_), spent, scratch_);
    ++next_;
  }
  const T* qbar() const { return ptr(qbar_); }
  const T* kbar() const { return ptr(kbar_); }

 private:
  static T* ptr(const at::Tensor& t) { return t.data_ptr<T>(); }

  void code(const T* w, T* out) const {
    const T* ring = ptr(ring_);
    const T scale = static_cast<T>(scale_);
    for (int64_t i = 0; i < features_ * R_; ++i) out[i] = T(0);
    for (int64_t j = 0; j < S_; ++j) {
      const T* z = ring + ((next_ + j) % S_) * features_ * R_;
      for (int64_t f = 0; f < features_; ++f) {
        const T weight = scale * w[f * S_ + j];
        T* row = out + f * R_;
        const T* noise = z + f * R_;
        for (int64_t r = 0; r < R_; ++r) row[r] += weight * noise[r];
      }
    }
  }

  uint64_t key_;
  int64_t S_, features_, R_;
  double scale_;
  at::Tensor weight_q_, weight_k_;  // (H F, S)
  at::Tensor ring_;                 // (S, H F R)
  std::vector<at::Tensor> slots_;   // the ring's rows, views made once
  at::Generator scratch_;
  at::Tensor qbar_, kbar_;          // (H F, R)
  int64_t next_ = 0;
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
    for (FusedConvCode<T>& code : conv_codes_) code.advance(position_);
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
  bool sine() const { return options_.positional().kind() == PositionalKind::sine_spe; }
  bool softmax() const { return options_.attention().kind() == AttentionKind::softmax; }
  bool conv() const { return options_.positional().kind() == PositionalKind::conv_spe; }
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
      if (a.feature_map && a.feature_map->options.kind() == FeatureMapKind::favor) {
        const FeatureMapImpl& map = *a.feature_map;
        layer.favor = map.projection.detach().to(embedding_.scalar_type()).contiguous();
        layer.favor_scale = map.options.scale_inputs() ? std::pow(static_cast<double>(map.options.dim()), -0.25) : 1.0;
        layer.favor_key_shift = layer.favor.pow(2).sum(-1).max().item<double>() / 2.0;  // as FeatureMap's keys
        mapped_q_ = at::empty({B, options_.heads(), map.features()}, embedding_.options());
        mapped_k_ = at::empty_like(mapped_q_);
      }
      if (a.decay && softmax()) layer.log_decay = kept(a.decay->log_decay().to(embedding_.scalar_type()));
      if (a.decay && !softmax()) layer.decay = at::exp(a.decay->log_decay().detach()).to(embedding_.scalar_type()).contiguous();
      if (a.toeplitz) {  // the lags t - j = 0 .. clip of a causal step (clip: every farther one)
        layer.clip = a.toeplitz->options.clip();
        const at::Tensor lags = a.toeplitz->bias.narrow(1, layer.clip, layer.clip + 1).to(embedding_.scalar_type());
        if (softmax()) layer.clipped_bias = kept(lags.unsqueeze(0).expand({B, -1, -1}));
        else layer.toeplitz_weights = kept(at::exp(lags));
      }
      if (a.relative) {  // bucket clip - d holds lag d = t - j (RelativePositionImpl::bucket_index)
        const RelativePositionImpl& shaw = *a.relative;
        layer.clip = shaw.options.clip();
        auto by_lag = [&](const at::Tensor& table) { return kept(table.narrow(0, 0, layer.clip + 1).flip(0)); };
        layer.shaw_keys = by_lag(shaw.key_table);
        if (shaw.options.on_values()) layer.shaw_values = by_lag(shaw.value_table);
        layer.clipped_bias = at::empty({B, options_.heads(), layer.clip + 1}, embedding_.options());
        lag_weights_ = at::empty_like(layer.clipped_bias);
      }
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
    if (sine() || conv() || on_features(options_))
      psi_q_ = at::empty({B, options_.heads(), position_step_dim(options_)}, o), psi_k_ = at::empty_like(psi_q_);
  }

  // The state after position 0 (each layer's prefix sums, rings or caches), and the codes.
  void take_state() {
    for (size_t i = 0; i < layers_.size(); ++i) {
      FusedLayer& layer = layers_[i];
      const AttentionState& s = state_.layers[i];
      if (softmax()) {
        start_caches(layer, s);
      } else if (layer.toeplitz_weights.defined()) {
        start_rings(layer, s.toeplitz);
      } else {
        layer.kv = s.linear.kv.contiguous(), layer.normalizer = s.linear.normalizer.contiguous();
      }
    }
    if (sine()) take_sine_codes();
    if (conv()) take_conv_codes();
  }

  // sineSPE: the oscillators of each code, and each layer's gated rows of its sampled code or the
  // scale of its exact coefficients.
  void take_sine_codes() {
    auto add_code = [&](const at::Tensor& frequencies, const at::Tensor& offsets) {  // (H, F, K) float64
      const int64_t k = sines(), features = frequencies.numel() / k;
      const at::Tensor f = frequencies.reshape({features, k}).contiguous(), o = offsets.reshape({features, k}).contiguous();
      codes_.push_back({cpu::SineOscillators(features, k, f.data_ptr<double>(), o.data_ptr<double>()),
                        at::empty({2, features, 2 * k + 1}, embedding_.options())});
      return static_cast<int>(codes_.size()) - 1;
    };
    auto add_sampled = [&](const SPECodeStream& stream) {
      const SineCodeFactors& factors = *stream.sine_factors();
      return add_code(factors.frequencies.to(at::kDouble), factors.offsets.to(at::kDouble));
    };
    auto add_exact = [&](const SineSPEImpl& sine) {  // as SineSPEImpl::exact_coefficients
      return add_code(at::sigmoid(sine.freqs.detach().to(at::kDouble)) / 2.0, sine.offsets.detach().to(at::kDouble));
    };
    const TransformerImpl& t = *model_->transformer;
    int shared = -1;
    if (state_.code) shared = add_sampled(*state_.code);
    if (exact_code(options_) && t.sine_spe) shared = add_exact(*t.sine_spe);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const AttentionState& s = state_.layers[i];
      FusedLayer& layer = layers_[i];
      const SelfAttentionImpl& a = *t.blocks->ptr(i)->as<TransformerBlock>()->attention;
      if (exact_code(options_)) {
        layer.code = a.sine_spe ? add_exact(*a.sine_spe) : shared;
        layer.exact_scale = exact_scale(a.sine_spe ? *a.sine_spe : *t.sine_spe, *a.spe_filter);
      } else {
        layer.sine_rows = s.gated_rows.contiguous();
        layer.code = s.code ? add_sampled(*s.code) : shared;
      }
    }
  }

  // Linear + Toeplitz: the rings of the last clip keys and values, position 0's in slot 0, and
  // the far sums (zero until position clip).
  void start_rings(FusedLayer& layer, const ToeplitzState& s) {
    const int64_t B = batch_, H = options_.heads();
    layer.key_ring = at::empty({B, H, layer.clip, s.keys.size(3)}, embedding_.options());
    layer.value_ring = at::empty({B, H, layer.clip, s.values.size(3)}, embedding_.options());
    layer.key_ring.narrow(2, 0, 1).copy_(s.keys);
    layer.value_ring.narrow(2, 0, 1).copy_(s.values);
    layer.kv = s.far.kv.contiguous(), layer.normalizer = s.far.normalizer.contiguous();
  }

  // convSPE: each code's noise ring from position 1 on, and each layer's gate.
  void take_conv_codes() {
    const TransformerImpl& t = *model_->transformer;
    const int64_t R = options_.positional().realizations();
    auto add_code = [&](const ConvSPEImpl& conv, const SPECodeStream& stream) {
      conv_codes_.emplace_back(conv, stream.conv_stream()->key(), R, /*start=*/1);
      return static_cast<int>(conv_codes_.size()) - 1;
    };
    const int shared = state_.code ? add_code(*t.conv_spe, *state_.code) : -1;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const AttentionState& s = state_.layers[i];
      FusedLayer& layer = layers_[i];
      const SelfAttentionImpl& a = *t.blocks->ptr(i)->as<TransformerBlock>()->attention;
      layer.code = s.code ? add_code(*a.conv_spe, *s.code) : shared;
      if (a.spe_filter->options.gated()) {  // SPEFilterImpl::gated_code: keep code + sqrt(s) eps
        TORCH_CHECK(s.gate_noise.defined(), "FusedDecoder: a gated convSPE layer without its gate noise");
        const at::Tensor gate = at::sigmoid(a.spe_filter->gate.detach()).to(embedding_.scalar_type());  // (H, F)
        layer.gate_keep = at::sqrt(1.0 - gate).flatten().contiguous();
        layer.gate_noise = (at::sqrt(gate).unsqueeze(-1) * s.gate_noise).flatten(0, 1).contiguous();
      }
    }
  }

  // Softmax: the caches of the keys and values of position 0, (B, 1, H, P) in the op-by-op state,
  // with room for kFirstCapacity positions; the keys in tiles of cpu::kKeyTile positions
  // (decoding_step.h), zeros past the last position.
  void start_caches(FusedLayer& layer, const AttentionState& s) {
    const int64_t B = batch_, H = options_.heads();
    layer.keys = at::zeros({B, H, kFirstCapacity / cpu::kKeyTile, s.keys.size(3), cpu::kKeyTile}, embedding_.options());
    layer.values = at::empty({B, H, kFirstCapacity, s.values.size(3)}, embedding_.options());
    layer.keys.select(2, 0).select(-1, 0).copy_(s.keys.select(1, 0));
    layer.values.narrow(2, 0, 1).copy_(s.values.transpose(1, 2));
    scores_.resize(kFirstCapacity);
  }

  // The caches twice as long when full (dimension 2: the tiles of keys, the positions of values):
  // log2 of the length allocations in a sequence.
  void make_room(FusedLayer& layer) {
    const int64_t capacity = layer.values.size(2);
    if (position_ < capacity) return;
    for (at::Tensor* cache : {&layer.keys, &layer.values}) {
      std::vector<int64_t> shape = cache->sizes().vec();
      shape[2] *= 2;
      at::Tensor longer = at::zeros(shape, cache->options());
      longer.narrow(2, 0, cache->size(2)).copy_(*cache);
      *cache = longer;
    }
    scores_.resize(static_cast<size_t>(2 * capacity));
  }

  // (H F, J): what multiplies the oscillators in the exact coefficients, gated as the layer's
  // filter gates them (SineSPEImpl::exact_scales, SPEFilterImpl::gate_coefficients).
  at::Tensor exact_scale(const SineSPEImpl& sine, const SPEFilterImpl& filter) const {
    const at::Tensor scales = sine.exact_scales(embedding_.scalar_type()).unsqueeze(0);  // (1, H, F, 2K)
    return filter.gate_coefficients(scales).squeeze(0).flatten(0, 1).contiguous();
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

  // Queries and keys of the B H heads, `features` each.
  struct Rows {
    T *q, *k;
    int64_t features;
  };

  // h (B, E), the block's normed input -> h, the attention's output (B, E).
  void attend(FusedLayer& layer, T* h) {
    const int64_t B = batch_, E = options_.dim();
    T *q = ptr(q_), *k = ptr(k_), *v = ptr(v_);
    product(B, E, E, h, layer.query, layer.query_bias, q);
    product(B, E, E, h, layer.key, layer.key_bias, k);
    product(B, E, E, h, layer.value, layer.value_bias, v);
    Rows in{q, k, head_dim(options_)};  // (B, H, D)
    if (!on_features(options_)) in = position(layer, in, /*keep_inputs=*/false);
    T* attention = ptr(attention_);  // (B, H, Dv)
    if (softmax()) {
      attend_softmax(layer, in, v, attention);
    } else {
      attend_linear(layer, in, v, attention);
    }
    product(B, E, E, attention, layer.output, layer.output_bias, h);
  }

  // Linear attention: phi(q), phi(k), positioned for the numerator at place features, then the
  // step on the layer's prefix sums (or its Toeplitz rings and far sums).
  void attend_linear(FusedLayer& layer, const Rows& in, const T* v, T* attention) {
    const int64_t B = batch_, H = options_.heads();
    const Rows phi = map_features(layer, in);
    if (layer.toeplitz_weights.defined()) {
      cpu::toeplitz_linear_attention_step<T>(B, H, phi.features, head_dim(options_), layer.clip, position_, phi.q, phi.k, v,
                                             ptr(layer.toeplitz_weights), kAttentionEps, ptr(layer.key_ring),
                                             ptr(layer.value_ring), ptr(layer.kv), ptr(layer.normalizer), attention);
      return;
    }
    cpu::NumeratorFeatures<T> numerator;
    if (on_features(options_)) {
      const Rows psi = position(layer, phi, /*keep_inputs=*/true);
      numerator = {psi.features, psi.q, psi.k};
    }
    cpu::linear_attention_step<T>(B, H, phi.features, head_dim(options_), phi.q, phi.k, v, ptr(layer.decay), kAttentionEps,
                                  ptr(layer.kv), ptr(layer.normalizer), attention, numerator);
  }

  // Softmax: this position's key and value into the caches, then the step over all of them. The
  // temperature is sqrt(P), or sqrt(D) over exact sineSPE's P = D J features (SelfAttention::prepare).
  void attend_softmax(FusedLayer& layer, const Rows& in, const T* v, T* attention) {
    const int64_t B = batch_, H = options_.heads(), P = in.features, Dv = head_dim(options_);
    make_room(layer);
    const int64_t capacity = layer.values.size(2);
    T *keys = ptr(layer.keys), *values = ptr(layer.values);
    for (int64_t bh = 0; bh < B * H; ++bh) {
      for (int64_t p = 0; p < P; ++p) keys[bh * capacity * P + cpu::key_offset(position_, p, P)] = in.k[bh * P + p];
      std::copy(v + bh * Dv, v + (bh + 1) * Dv, values + (bh * capacity + position_) * Dv);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(exact_code(options_) ? head_dim(options_) : P));
    if (layer.shaw_keys.defined()) shaw_key_logits(layer, in.q, P, scale);
    const bool shaw_values = layer.shaw_values.defined();
    const cpu::LagBias<T> bias{ptr(layer.log_decay), ptr(layer.clipped_bias), layer.clip,
                               shaw_values ? ptr(lag_weights_) : nullptr};
    cpu::softmax_attention_step<T>(B, H, P, Dv, position_ + 1, capacity, in.q, keys, values, scale, bias,
                                   scores_.data(), attention);
    if (shaw_values) shaw_value_term(layer, attention);
  }

  // Shaw: clipped_bias[b, h, d] = scale q[b, h] . a^K(d) for the lags d = 0 .. clip.
  void shaw_key_logits(FusedLayer& layer, const T* q, int64_t P, double scale) {
    const int64_t rows = batch_ * options_.heads(), lags = layer.clip + 1;
    T* logits = ptr(layer.clipped_bias);
    cpu::rows_by_weight<T>(rows, P, lags, q, ptr(layer.shaw_keys), nullptr, logits);
    for (int64_t i = 0; i < rows * lags; ++i) logits[i] *= static_cast<T>(scale);
  }

  // Shaw: out[b, h] += sum_d (the weights of lag d) a^V(d).
  void shaw_value_term(const FusedLayer& layer, T* out) const {
    const int64_t rows = batch_ * options_.heads(), lags = layer.clip + 1, Dv = head_dim(options_);
    const T *weights = ptr(lag_weights_), *table = ptr(layer.shaw_values);
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t d = 0; d < lags; ++d)
        for (int64_t i = 0; i < Dv; ++i) out[row * Dv + i] += weights[row * lags + d] * table[d * Dv + i];
  }

  // q, k at this position: rotated (in place, or into psi_q_, psi_k_ to keep the inputs), or
  // sineSPE's psi in psi_q_, psi_k_: filtered by the sampled code, or times the exact coefficients.
  Rows position(const FusedLayer& layer, Rows x, bool keep_inputs) {
    const int64_t B = batch_, H = options_.heads(), F = x.features;
    T *psi_q = ptr(psi_q_), *psi_k = ptr(psi_k_);
    if (rotary_frequencies_.defined()) {
      if (keep_inputs) {
        std::copy(x.q, x.q + B * H * F, psi_q), std::copy(x.k, x.k + B * H * F, psi_k);
        x = {psi_q, psi_k, F};
      }
      cpu::rotate_pairs<T>(B * H, F, ptr(rotary_cos_), ptr(rotary_sin_), x.q);
      cpu::rotate_pairs<T>(B * H, F, ptr(rotary_cos_), ptr(rotary_sin_), x.k);
      return x;
    }
    if (conv()) {
      const FusedConvCode<T>& code = conv_codes_[layer.code];
      conv_filter(layer, x.q, x.features, code.qbar(), psi_q);
      conv_filter(layer, x.k, x.features, code.kbar(), psi_k);
      return {psi_q, psi_k, options_.positional().realizations()};
    }
    if (!sine()) return x;
    const T* coefficients = ptr(codes_[layer.code].coefficients);  // (2, H F, 2K + 1)
    const T* key_coefficients = coefficients + H * F * (2 * sines() + 1);
    if (exact_code(options_)) {
      exact_features(x.q, coefficients, ptr(layer.exact_scale), F, psi_q);
      exact_features(x.k, key_coefficients, ptr(layer.exact_scale), F, psi_k);
      return {psi_q, psi_k, F * exact_columns(options_)};
    }
    const int64_t R = options_.positional().realizations();
    const cpu::SineFilterShape shape{B, 1, H, F, sines(), R, 0};
    cpu::sine_spe_filter_position<T>(shape, x.q, coefficients, ptr(layer.sine_rows), psi_q);
    cpu::sine_spe_filter_position<T>(shape, x.k, key_coefficients, ptr(layer.sine_rows), psi_k);
    return {psi_q, psi_k, R};
  }

  // psi (B, H, R) = x (B, H, F) by the gated code (H F, R): per head, sum_f x_f (keep_f code_f + noise_f).
  void conv_filter(const FusedLayer& layer, const T* x, int64_t F, const T* code, T* psi) const {
    const int64_t H = options_.heads(), R = options_.positional().realizations();
    const T *keep = ptr(layer.gate_keep), *noise = ptr(layer.gate_noise);
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t h = 0; h < H; ++h) {
        T* out = psi + (b * H + h) * R;
        for (int64_t r = 0; r < R; ++r) out[r] = T(0);
        for (int64_t f = h * F; f < (h + 1) * F; ++f) {
          const T value = x[b * H * F + f];
          const T* row = code + f * R;
          if (!keep) {
            for (int64_t r = 0; r < R; ++r) out[r] += value * row[r];
            continue;
          }
          const T kept = value * keep[f];
          const T* eps = noise + f * R;
          for (int64_t r = 0; r < R; ++r) out[r] += kept * row[r] + value * eps[r];
        }
      }
  }

  // psi (B, H, F J) = x (B, H, F) times this position's exact coefficients: oscillators
  // (H F, 2K + 1) by scale (H F, J).
  void exact_features(const T* x, const T* oscillators, const T* scale, int64_t F, T* psi) const {
    const int64_t H = options_.heads(), J = exact_columns(options_), row = 2 * sines() + 1;
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t f = 0; f < H * F; ++f) {  // f: head and feature
        const T value = x[b * H * F + f];
        T* out = psi + (b * H * F + f) * J;
        for (int64_t j = 0; j < J; ++j) out[j] = value * oscillators[f * row + j] * scale[f * J + j];
      }
  }

  // phi(q), phi(k): FAVOR+ features (into mapped_q_, mapped_k_) or elu + 1 / relu in place.
  Rows map_features(const FusedLayer& layer, Rows x) {
    const int64_t rows = batch_ * options_.heads();
    if (layer.favor.defined()) {  // (B H, F) -> (B H, M)
      const int64_t M = layer.favor.size(0);
      cpu::favor_features<T>(rows, x.features, M, x.q, ptr(layer.favor), layer.favor_scale, true, 0.0, ptr(mapped_q_));
      cpu::favor_features<T>(rows, x.features, M, x.k, ptr(layer.favor), layer.favor_scale, false,
                             layer.favor_key_shift, ptr(mapped_k_));
      return {ptr(mapped_q_), ptr(mapped_k_), M};
    }
    const bool elu = options_.attention().feature_map() == FeatureMapKind::elu;
    cpu::feature_map_in_place<T>(elu, rows * x.features, x.q);
    cpu::feature_map_in_place<T>(elu, rows * x.features, x.k);
    return x;
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
  std::vector<FusedConvCode<T>> conv_codes_;
  at::Tensor embedding_, learned_, final_norm_weight_, final_norm_bias_, head_, head_bias_;
  double final_norm_eps_ = 1e-5, rotary_magnitude_ = 1.0;
  at::Tensor sinusoidal_frequencies_, rotary_frequencies_, rotary_cos_, rotary_sin_;
  at::Tensor x_, h_, ffn_, q_, k_, v_, attention_, psi_q_, psi_k_, mapped_q_, mapped_k_;  // the step's buffers
  at::Tensor logits_[2];
  std::vector<T> scores_;  // softmax: one head's scores
  at::Tensor lag_weights_;  // softmax + Shaw: the weights of each clipped lag (B, H, clip + 1)
};

}  // namespace

std::string fused_decoding_gap(const Model& model) {
  const PositionalOptions& p = model->options.transformer().positional();
  if (!ops::fused_kernel_takes(model->transformer->embedding->weight)) return "float32 or float64 weights on the CPU";
  if (p.kind() == PositionalKind::conv_spe && p.conv_ndim() != 1) return "a 1-D convSPE";
  return "";
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
