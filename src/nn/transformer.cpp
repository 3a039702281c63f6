#include "spe/nn/transformer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include <stdexcept>

#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"
#include "attention_layout.h"
#include "dropout.h"
#include "row_products.h"

namespace spe::nn {
namespace {

// The module's dropout (its p, its training flag) with masks drawn 16 bits per entry (dropout.h).
at::Tensor drop(const torch::nn::Dropout& module, const at::Tensor& x) {
  return apply_dropout(x, module->options.p(), module->is_training());
}

// Orthogonal draws of a gated sineSPE code hold the gate's noise rows in the code's own blocks, so
// that the gate's noise is orthogonal to the code too (spe_code.h).
bool gate_noise_with_code(const TransformerOptions& o) {
  const PositionalOptions& p = o.positional();
  return p.kind() == PositionalKind::sine_spe && p.gated() && p.noise() == SPENoise::orthogonal;
}

void make_spe(const TransformerOptions& o, torch::nn::Module& owner, SineSPE& sine, ConvSPE& conv) {
  const PositionalOptions& p = o.positional();
  const int64_t dim = positioned_dim(o);
  if (p.kind() == PositionalKind::sine_spe)
    sine = owner.register_module("sine_spe", SineSPE(SineSPEOptions(o.heads(), dim)
                                                         .sines(p.sines())
                                                         .realizations(p.realizations())
                                                         .init(p.init())
                                                         .noise(p.noise())
                                                         .gate_noise(gate_noise_with_code(o))));
  else
    conv = owner.register_module("conv_spe", ConvSPE(ConvSPEOptions(o.heads(), dim)
                                                          .ndim(p.conv_ndim())
                                                          .kernel_size(p.kernel_size())
                                                          .realizations(p.realizations())));
}

// The code for sequences of `length` positions: a grid's worth for 2-D convSPE.
SPECode draw_code(const TransformerOptions& o, SineSPE& sine, ConvSPE& conv, int64_t length,
                  OptionalGenerator generator) {
  if (sine) return sine->forward(length, c10::nullopt, generator);
  if (o.positional().conv_ndim() == 2) {
    const auto& grid = o.grid();
    if (length > grid[0] * grid[1])
      throw std::invalid_argument(fmt::format("2-D convSPE: a sequence of {} tokens does not fit the {} x {} grid",
                                              length, grid[0], grid[1]));
    return conv->forward(grid, c10::nullopt, generator);
  }
  return conv->forward({length}, c10::nullopt, generator);
}

// The sampled code of a sequence being decoded, from the module that draws it (null when the
// model draws none or the module is not this owner's).
std::unique_ptr<SPECodeStream> decoding_code(const TransformerOptions& o, const SineSPE& sine, const ConvSPE& conv,
                                             OptionalGenerator generator) {
  if (!draws_spe_code(o)) return nullptr;
  const int64_t r = o.positional().realizations();
  if (sine) return std::make_unique<SPECodeStream>(*sine, r, generator);
  if (conv) return std::make_unique<SPECodeStream>(*conv, r, generator);
  return nullptr;
}

void check_decodable(const TransformerOptions& o) {
  if (!o.causal())
    throw std::invalid_argument("decoding token by token needs a causal model (each position sees the ones before)");
  if (o.positional().kind() == PositionalKind::conv_spe && o.positional().conv_ndim() != 1)
    throw std::invalid_argument("recurrent decoding: 2-D convSPE has no order of positions to extend; use the "
                                "prefix decoder");
}

}  // namespace

bool draws_spe_code(const TransformerOptions& o) { return is_spe(o.positional().kind()) && !exact_code(o); }

void check_transformer_options(const TransformerOptions& o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  const PositionalOptions& p = o.positional();
  const AttentionOptions& a = o.attention();
  if (o.vocab_size() < 2) fail(fmt::format("vocab_size is {}, expected at least 2", o.vocab_size()));
  if (o.dim() < 1 || o.heads() < 1 || o.dim() % o.heads() != 0)
    fail(fmt::format("dim {} must be a positive multiple of heads {}", o.dim(), o.heads()));
  if (o.layers() < 1) fail(fmt::format("layers is {}, expected at least 1", o.layers()));
  if (o.ffn_dim() < 1) fail(fmt::format("ffn_dim is {}, expected at least 1", o.ffn_dim()));
  if (!(o.dropout() >= 0.0 && o.dropout() < 1.0)) fail(fmt::format("dropout is {}, expected in [0, 1)", o.dropout()));
  if (o.causal() && o.cls_token()) fail("a [CLS] token needs a non-causal model (use mean pooling)");
  if (p.kind() == PositionalKind::rotary && head_dim(o) % 2 != 0)
    fail(fmt::format("rotary needs an even head dimension, dim / heads is {}", head_dim(o)));
  if (p.kind() == PositionalKind::shaw && a.kind() != AttentionKind::softmax)
    fail("shaw relative positions act inside softmax attention: set attention.kind to softmax");
  if ((p.kind() == PositionalKind::shaw || p.kind() == PositionalKind::toeplitz) && p.clip() < 1)
    fail(fmt::format("{} clip is {}, expected >= 1", choice_name(p.kind(), kPositionalKinds), p.clip()));
  if (p.kind() == PositionalKind::learned && p.max_length() < 1)
    fail(fmt::format("learned max_length is {}, expected >= 1", p.max_length()));
  if (is_spe(p.kind()) && p.realizations() < 1)
    fail(fmt::format("SPE realizations is {}, expected >= 1", p.realizations()));
  if (!std::isfinite(p.gate_mean())) fail(fmt::format("gate_mean is {}, expected a finite number", p.gate_mean()));
  if (p.kind() == PositionalKind::sine_spe && p.sines() < 1) fail(fmt::format("sines is {}, expected >= 1", p.sines()));
  if (p.kind() == PositionalKind::conv_spe) {
    if (p.kernel_size() < 1) fail(fmt::format("kernel_size is {}, expected >= 1", p.kernel_size()));
    if (p.conv_ndim() != 1 && p.conv_ndim() != 2) fail(fmt::format("conv_ndim is {}, expected 1 or 2", p.conv_ndim()));
    if (p.conv_ndim() == 2 && (o.grid().size() != 2 || o.cls_token()))
      fail("2-D convSPE needs sequences on a grid (an image dataset) and mean pooling, not a [CLS] token");
  }
  if (on_features(o) && p.kind() == PositionalKind::rotary && mapped_dim(a, head_dim(o)) % 2 != 0)
    fail(fmt::format("rotary on the features needs an even number of them, got {}", mapped_dim(a, head_dim(o))));
  if (exact_code(o) && a.kind() != AttentionKind::softmax && !on_features(o))
    fail("exact sineSPE under a feature map needs place features: phi applied to the exact features would break "
         "their dependence on m - n");
  if (a.kind() == AttentionKind::linear && a.feature_map() == FeatureMapKind::favor)
    fail("attention.kind linear takes feature_map elu or relu; use attention.kind favor for FAVOR+");
  if (a.features() < 0 || a.redraw_interval() < 0) fail("attention features and redraw_interval must be >= 0");
}

// ---------------------------------------------------------------------------------------------

SelfAttentionImpl::SelfAttentionImpl(const TransformerOptions& options_) : options(options_) { reset(); }

void SelfAttentionImpl::reset() {
  check_transformer_options(options);
  const int64_t e = options.dim(), d = head_dim(options);
  const PositionalOptions& p = options.positional();
  query = register_module("query", torch::nn::Linear(e, e));
  key = register_module("key", torch::nn::Linear(e, e));
  value = register_module("value", torch::nn::Linear(e, e));
  output = register_module("output", torch::nn::Linear(e, e));
  if (p.kind() == PositionalKind::rotary) rotary = register_module("rotary", RotaryEncoding(positioned_dim(options)));
  if (p.kind() == PositionalKind::shaw)
    relative = register_module("relative", RelativePosition(RelativePositionOptions(d, p.clip())));
  if (p.kind() == PositionalKind::decay)
    decay = register_module("decay", Decay(DecayOptions(options.heads()).learnable(p.learnable_decay())));
  if (p.kind() == PositionalKind::toeplitz)
    toeplitz = register_module("toeplitz", ToeplitzBias(ToeplitzBiasOptions(options.heads()).clip(p.clip())));
  if (is_spe(p.kind())) {
    if (!p.shared_code()) make_spe(options, *this, sine_spe, conv_spe);
    spe_filter = register_module("spe_filter",
                                 SPEFilter(SPEFilterOptions(options.heads(), positioned_dim(options))
                                               .gated(p.gated())
                                               .gate_mean(p.gate_mean())
                                               .noise(p.noise())));
  }
  const AttentionOptions& a = options.attention();
  if (a.kind() != AttentionKind::softmax) {
    const FeatureMapKind kind = a.kind() == AttentionKind::favor ? FeatureMapKind::favor : a.feature_map();
    FeatureMapOptions map_options(kind, filtered_dim(options));
    if (kind == FeatureMapKind::favor) map_options.features(a.features()).redraw_interval(a.redraw_interval());
    feature_map = register_module("feature_map", FeatureMap(map_options));
  }
}

at::Tensor SelfAttentionImpl::forward(const at::Tensor& x, const AttentionMask& mask, const SharedSPE& shared,
                                      OptionalGenerator generator) {
  const bool sampled = draws_spe_code(options);
  SPECode gated;  // sampled SPE: this forward's code after the gate
  if (sampled) {
    SPECode own;
    if (!shared.code.code) own = draw_code(options, sine_spe, conv_spe, x.size(1), generator);
    gated = spe_filter->apply_gate(shared.code.code ? *shared.code.code : own, generator);
  }
  const AttentionInputs in = prepare(x, 0, sampled ? PositionCode{&gated, 0} : PositionCode{}, shared.sine);
  return linear_rows(output, attend(in, mask).flatten(2));
}

AttentionState SelfAttentionImpl::start_decoding(OptionalGenerator generator) const {
  check_decodable(options);
  AttentionState state;
  state.code = decoding_code(options, sine_spe, conv_spe, generator);
  if (draws_spe_code(options) && !gate_noise_with_code(options))
    state.gate_noise = spe_filter->sample_gate_noise(options.positional().realizations(), query->weight.scalar_type(),
                                                     generator);
  return state;
}

at::Tensor SelfAttentionImpl::step(const at::Tensor& x, AttentionState& state, const SharedSPE& shared) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1, "SelfAttention::step: x must be (B, 1, E), got ", x.sizes());
  const PositionCode gated = draws_spe_code(options) ? gated_code_at(state, shared.code) : PositionCode{};
  const AttentionInputs in = prepare(x, state.position, gated, shared.sine);
  const at::Tensor out = attend_step(in, state);  // (B, 1, H, Dv)
  ++state.position;
  return linear_rows(output, out.flatten(2));
}

PositionCode SelfAttentionImpl::gated_code_at(AttentionState& state, const PositionCode& shared) {
  const PositionCode code = state.code ? state.code->next() : shared;
  TORCH_CHECK(code.code != nullptr, "SelfAttention::step: sampled SPE needs the model's code of the position");
  // A factored (sine) code covers every position: its gated form and rows are made once per sequence.
  if (code.code->materialised() || !state.gated.sine.has_value()) {
    state.gated = spe_filter->gated_code(
        *code.code, code.code->gate_noise.defined() ? spe_filter->gate_noise_for(*code.code) : state.gate_noise);
    if (state.gated.sine.has_value()) state.gated_rows = sine_step_rows(*state.gated.sine);
  }
  return {&state.gated, code.row, code.coefficients, code.coefficients.defined() ? state.gated_rows : at::Tensor()};
}

AttentionInputs SelfAttentionImpl::prepare(const at::Tensor& x, int64_t start, const PositionCode& gated,
                                           SineSPEImpl* shared_sine) {
  // x: (B, N, E) -> q, k, v: (B, N, H, D)
  auto heads = [&](const at::Tensor& t) { return t.unflatten(2, {options.heads(), head_dim(options)}); };
  AttentionInputs in{heads(linear_rows(query, x)), heads(linear_rows(key, x)), heads(linear_rows(value, x)), {}, {}};
  if (!on_features(options)) std::tie(in.q, in.k) = position(in.q, in.k, start, gated, shared_sine);
  if (feature_map) {
    in.q = feature_map(in.q, FeatureRole::query);  // (B, N, H, M)
    in.k = feature_map(in.k, FeatureRole::key);
    if (on_features(options) && exact_code(options))
      in.separable = exact_code_coefficients(in.q.size(1), start, in.q.scalar_type(), shared_sine);
    else if (on_features(options))
      std::tie(in.numerator.query, in.numerator.key) = position(in.q, in.k, start, gated, shared_sine);
  }
  // Softmax over exact sineSPE: its F = D (2K [+ 1]) features score sum_d q_d k_d P_d(m - n), on the
  // scale of q . k, so the temperature stays sqrt(D), not softmax's sqrt(F).
  if (!feature_map && exact_code(options))
    in.q = in.q * std::sqrt(static_cast<double>(in.q.size(3)) / static_cast<double>(head_dim(options)));
  return in;
}

std::pair<at::Tensor, at::Tensor> SelfAttentionImpl::position(const at::Tensor& q, const at::Tensor& k, int64_t start,
                                                              const PositionCode& gated, SineSPEImpl* shared_sine) {
  if (rotary) return {rotary(q, start), rotary(k, start)};
  if (!spe_filter) return {q, k};
  if (exact_code(options)) {
    const PositionedFeatures psi =
        positioned_features(q, k, exact_code_coefficients(q.size(1), start, q.scalar_type(), shared_sine));
    return {psi.query, psi.key};
  }
  TORCH_CHECK(gated.code != nullptr, "SelfAttention: sampled SPE needs the gated code of the positions");
  return spe_filter->filter(q, k, *gated.code, gated.row, gated.coefficients, gated.rows);
}

SeparableFeatures SelfAttentionImpl::exact_code_coefficients(int64_t length, int64_t start, at::ScalarType dtype,
                                                             SineSPEImpl* shared_sine) {
  const SineSPEImpl& sine = shared_sine ? *shared_sine : *sine_spe;
  // (N, H, D, 2K [+ 1]): the gated coefficients, which do not depend on the batch, so that x
  // (B, N, H, D) is multiplied once (what gate_features(x, exact_features(x)) computes in three).
  auto gated = [&](bool query_side) {
    return spe_filter->gate_coefficients(sine.exact_coefficients(length, query_side, start, dtype));
  };
  return {gated(/*query_side=*/true), gated(/*query_side=*/false)};
}

at::Tensor SelfAttentionImpl::score_bias(int64_t start, int64_t queries, int64_t keys) const {
  if (decay) return decay->score_bias(start, queries, keys);
  return toeplitz ? toeplitz->score_bias(start, queries, keys) : at::Tensor();
}

at::Tensor SelfAttentionImpl::attend(const AttentionInputs& in, const AttentionMask& mask) {
  if (!feature_map)
    return softmax_attention(in.q, in.k, in.v, mask, relative ? relative.get() : nullptr,
                             score_bias(0, in.q.size(1), in.k.size(1)));
  if (decay) return decayed_linear_attention(in.q, in.k, in.v, decay->log_decay(), mask.causal, mask.key_padding);
  if (toeplitz)
    return clipped_toeplitz_linear_attention(in.q, in.k, in.v, toeplitz->bias, mask.causal, mask.key_padding);
  if (in.separable.query.defined())
    return mask.causal ? causal_separable_linear_attention(in.q, in.k, in.v, in.separable, mask.key_padding)
                       : separable_linear_attention(in.q, in.k, in.v, in.separable, mask.key_padding);
  if (in.numerator.query.defined())
    return mask.causal ? causal_linear_attention(in.q, in.k, in.v, in.numerator, mask.key_padding)
                       : linear_attention(in.q, in.k, in.v, in.numerator, mask.key_padding);
  return mask.causal ? causal_linear_attention(in.q, in.k, in.v, mask.key_padding)
                     : linear_attention(in.q, in.k, in.v, mask.key_padding);
}

at::Tensor SelfAttentionImpl::attend_step(const AttentionInputs& in, AttentionState& state) {
  if (!feature_map) {
    state.keys = state.keys.defined() ? at::cat({state.keys, in.k}, 1) : in.k;
    state.values = state.values.defined() ? at::cat({state.values, in.v}, 1) : in.v;
    return softmax_attention(in.q, state.keys, state.values, AttentionMask::none(), relative ? relative.get() : nullptr,
                             score_bias(state.position, 1, state.keys.size(1)));
  }
  const at::Tensor phi_q = in.q.select(1, 0), phi_k = in.k.select(1, 0), v = in.v.select(1, 0);  // (B, H, M), (B, H, Dv)
  if (toeplitz) return clipped_toeplitz_linear_attention_step(phi_q, phi_k, v, toeplitz->bias, state.toeplitz).unsqueeze(1);
  const PositionedFeatures numerator =
      in.separable.query.defined() ? positioned_features(in.q, in.k, in.separable) : in.numerator;
  const bool positioned = numerator.query.defined();
  if (!state.linear.kv.defined())
    state.linear = LinearAttentionState::zeros(phi_k.size(0), phi_k.size(1), phi_k.size(2), v.size(2), v.options(),
                                               positioned ? numerator.key.size(3) : 0);
  at::Tensor out;  // (B, H, Dv)
  if (decay)
    out = decayed_causal_linear_attention_step(phi_q, phi_k, v, decay->log_decay(), state.linear);
  else if (positioned)
    out = causal_linear_attention_step(phi_q, phi_k, v,
                                       {numerator.query.select(1, 0), numerator.key.select(1, 0)}, state.linear);
  else
    out = causal_linear_attention_step(phi_q, phi_k, v, state.linear);
  return out.unsqueeze(1);
}

// ---------------------------------------------------------------------------------------------

TransformerBlockImpl::TransformerBlockImpl(const TransformerOptions& options_) : options(options_) { reset(); }

void TransformerBlockImpl::reset() {
  const int64_t e = options.dim();
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({e})));
  attention = register_module("attention", SelfAttention(options));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({e})));
  expand = register_module("expand", torch::nn::Linear(e, options.ffn_dim()));
  contract = register_module("contract", torch::nn::Linear(options.ffn_dim(), e));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const AttentionMask& mask, const SharedSPE& shared,
                                         OptionalGenerator generator) {
  return feed_forward(x + drop(dropout, attention(norm1(x), mask, shared, generator)));
}

at::Tensor TransformerBlockImpl::step(const at::Tensor& x, AttentionState& state, const SharedSPE& shared) {
  return feed_forward(x + drop(dropout, attention->step(norm1(x), state, shared)));
}

at::Tensor TransformerBlockImpl::feed_forward(const at::Tensor& h) {
  return h + drop(dropout, linear_rows(contract, drop(dropout, at::gelu(linear_rows(expand, norm2(h))))));
}

// ---------------------------------------------------------------------------------------------

TransformerImpl::TransformerImpl(const TransformerOptions& options_) : options(options_) { reset(); }

void TransformerImpl::reset() {
  check_transformer_options(options);
  const int64_t e = options.dim();
  const PositionalOptions& p = options.positional();
  embedding = register_module("embedding", torch::nn::Embedding(options.vocab_size() + (options.cls_token() ? 1 : 0), e));
  if (p.kind() == PositionalKind::sinusoidal) sinusoidal = register_module("sinusoidal", SinusoidalEncoding(e));
  if (p.kind() == PositionalKind::learned)
    learned = register_module("learned", LearnedEncoding(LearnedEncodingOptions(p.max_length(), e)));
  if (is_spe(p.kind()) && p.shared_code()) make_spe(options, *this, sine_spe, conv_spe);
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.layers(); ++i) blocks->push_back(TransformerBlock(options));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({e})));
}

at::Tensor TransformerImpl::output_padding(const at::Tensor& tokens, const at::Tensor& padding) const {
  if (!padding.defined() || !options.cls_token()) return padding;
  return at::cat({at::ones({tokens.size(0), 1}, padding.options()), padding}, 1);
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens, const at::Tensor& padding, OptionalGenerator generator) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
              "Transformer: tokens must be (B, N) int64, got ", tokens.sizes(), " ", tokens.scalar_type());
  TORCH_CHECK(!padding.defined() || (padding.sizes() == tokens.sizes() && padding.scalar_type() == at::kBool),
              "Transformer: padding must be (B, N) bool like the tokens ", tokens.sizes(), ", got ", padding.sizes(),
              " ", padding.scalar_type());
  check_token_ids(tokens);
  at::Tensor x = embed(tokens);
  SPECode code;
  SharedSPE shared{sine_spe ? sine_spe.get() : nullptr, {}};
  if ((sine_spe || conv_spe) && draws_spe_code(options)) {
    code = draw_code(options, sine_spe, conv_spe, x.size(1), generator);
    shared.code = {&code, 0};
  }
  const AttentionMask mask{output_padding(tokens, padding), options.causal()};
  for (const auto& block : *blocks) x = block->as<TransformerBlock>()->forward(x, mask, shared, generator);
  return final_norm(x);
}

DecodingState TransformerImpl::start_decoding(OptionalGenerator generator) const {
  check_decodable(options);
  at::NoGradGuard no_grad;
  DecodingState state;
  state.code = decoding_code(options, sine_spe, conv_spe, generator);
  for (const auto& block : *blocks)
    state.layers.push_back(block->as<TransformerBlock>()->attention->start_decoding(generator));
  return state;
}

at::Tensor TransformerImpl::step(const at::Tensor& tokens, DecodingState& state) {
  TORCH_CHECK(tokens.dim() == 1 && tokens.scalar_type() == at::kLong, "Transformer::step: tokens must be (B) int64, got ",
              tokens.sizes(), " ", tokens.scalar_type());
  TORCH_CHECK(state.layers.size() == blocks->size(), "Transformer::step: the state holds ", state.layers.size(),
              " layers, the model has ", blocks->size(), " (make it with start_decoding)");
  check_token_ids(tokens);
  at::Tensor x = embed(tokens.unsqueeze(1), state.position);  // (B, 1, E)
  const SharedSPE shared{sine_spe ? sine_spe.get() : nullptr, state.code ? state.code->next() : PositionCode{}};
  for (size_t i = 0; i < state.layers.size(); ++i) x = blocks[i]->as<TransformerBlock>()->step(x, state.layers[i], shared);
  ++state.position;
  return final_norm(x);
}

void TransformerImpl::check_token_ids(const at::Tensor& tokens) const {
  TORCH_CHECK(tokens.numel() == 0 || (tokens.min().item<int64_t>() >= 0 &&
                                      tokens.max().item<int64_t>() < options.vocab_size()),
              "Transformer: token ids must lie in [0, ", options.vocab_size(), ")");
}

at::Tensor TransformerImpl::embed(const at::Tensor& tokens, int64_t start) {
  at::Tensor x = embedding(tokens);  // (B, N, E)
  if (options.cls_token()) {
    const at::Tensor cls = at::full({tokens.size(0), 1}, options.vocab_size(), tokens.options());
    x = at::cat({embedding(cls), x}, 1);
  }
  if (sinusoidal) x = sinusoidal(x, start);
  if (learned) x = learned(x, start);
  return drop(dropout, x);
}

void TransformerImpl::after_training_step(int64_t steps_done) {
  for (const auto& block : *blocks) {
    FeatureMap& feature_map = block->as<TransformerBlock>()->attention->feature_map;
    if (feature_map) feature_map->after_training_step(steps_done);
  }
}

}  // namespace spe::nn
