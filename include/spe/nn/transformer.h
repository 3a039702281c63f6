#pragma once
// The transformer of every model: token embedding, an optional absolute encoding, pre-norm
// blocks of self-attention and feed-forward, a final norm. The positional encoding and the
// attention are chosen by options; relative ones act inside each attention layer:
//   rotary:            rotates q and k
//   shaw:              adds learned a^K, a^V inside softmax attention (Shaw et al. 2018)
//   sine_spe/conv_spe: filters q, k -> qhat, khat (B, N, H, R) with a code drawn per forward,
//                      one code for all layers when shared_code, and a gate per layer
//   decay:             weighs the pair (m, n) by g_h^|m - n| (per head; softmax and linear)
//   toeplitz:          weighs it by e^(b_h(m - n)), b learned per clipped lag (linear:
//                      clipped_toeplitz_linear_attention;
//                      softmax: b added to the scores)
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <vector>

#include "spe/attention/feature_maps.h"
#include "spe/attention/linear.h"
#include "spe/attention/masks.h"
#include "spe/encoding/absolute.h"
#include "spe/encoding/code_stream.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/decay.h"
#include "spe/encoding/relative.h"
#include "spe/encoding/rotary.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/encoding/toeplitz.h"
#include "spe/util/choices.h"

namespace spe::nn {

enum class PositionalKind { none, sinusoidal, learned, rotary, shaw, sine_spe, conv_spe, decay, toeplitz };
inline constexpr Choice<PositionalKind> kPositionalKinds[] = {
    {"none", PositionalKind::none},   {"sinusoidal", PositionalKind::sinusoidal},
    {"learned", PositionalKind::learned}, {"rotary", PositionalKind::rotary},
    {"shaw", PositionalKind::shaw},   {"sine_spe", PositionalKind::sine_spe},
    {"conv_spe", PositionalKind::conv_spe}, {"decay", PositionalKind::decay},
    {"toeplitz", PositionalKind::toeplitz}};

// Where a relative encoding acts: on q, k before the feature map, or on phi(q), phi(k) in the
// numerator of linear attention (linear.h, PositionedFeatures).
enum class PositionalPlace { inputs, features };
inline constexpr Choice<PositionalPlace> kPositionalPlaces[] = {{"inputs", PositionalPlace::inputs},
                                                                 {"features", PositionalPlace::features}};

// sineSPE's code: R sampled realizations (the paper), or the exact factorisation of its kernel
// (2K features per input feature, no noise; SineSPEImpl::exact_features).
enum class SPECodeKind { sampled, exact };
inline constexpr Choice<SPECodeKind> kSPECodeKinds[] = {{"sampled", SPECodeKind::sampled}, {"exact", SPECodeKind::exact}};

enum class AttentionKind { softmax, linear, favor };
inline constexpr Choice<AttentionKind> kAttentionKinds[] = {
    {"softmax", AttentionKind::softmax}, {"linear", AttentionKind::linear}, {"favor", AttentionKind::favor}};

// Feature maps of linear attention (favor has its own kind).
inline constexpr Choice<FeatureMapKind> kLinearFeatureMaps[] = {{"elu", FeatureMapKind::elu},
                                                                 {"relu", FeatureMapKind::relu}};

struct PositionalOptions {
  TORCH_ARG(PositionalKind, kind) = PositionalKind::none;
  TORCH_ARG(int64_t, realizations) = 64;  // SPE: R, the features of qhat and khat
  TORCH_ARG(int64_t, sines) = 5;          // sineSPE: K
  TORCH_ARG(int64_t, kernel_size) = 128;  // convSPE: S
  TORCH_ARG(int64_t, conv_ndim) = 1;      // convSPE: 1, or 2 over the grid of an image
  TORCH_ARG(bool, gated) = true;          // SPE: the gate of each layer
  TORCH_ARG(double, gate_mean) = 0.0;     // SPE: the gate starts at N(gate_mean, 1) (SPEFilterOptions)
  TORCH_ARG(bool, shared_code) = true;    // SPE: one module and one code per forward for all layers
  TORCH_ARG(int64_t, clip) = 32;          // shaw, toeplitz: relative distances are clipped to [-clip, clip]
  TORCH_ARG(int64_t, max_length) = 4096;  // learned: rows of the table
  TORCH_ARG(PositionalPlace, place) = PositionalPlace::inputs;  // rotary, SPE: see PositionalPlace
  TORCH_ARG(SPECodeKind, code) = SPECodeKind::sampled;          // sine_spe
  TORCH_ARG(SineInit, init) = SineInit::reference;              // sine_spe: how the frequencies start
  TORCH_ARG(SPENoise, noise) = SPENoise::gaussian;              // sampled SPE: how its code's and gate's weights are drawn
  TORCH_ARG(bool, learnable_decay) = false;                     // decay: train the per-head decays
};

struct AttentionOptions {
  TORCH_ARG(AttentionKind, kind) = AttentionKind::linear;
  TORCH_ARG(FeatureMapKind, feature_map) = FeatureMapKind::elu;  // linear: elu or relu
  TORCH_ARG(int64_t, features) = 0;         // favor: M random features (0: as many as inputs)
  TORCH_ARG(int64_t, redraw_interval) = 0;  // favor: new features every n training steps
};

struct TransformerOptions {
  explicit TransformerOptions(int64_t vocab_size) : vocab_size_(vocab_size) {}
  TORCH_ARG(int64_t, vocab_size);        // token ids in [0, vocab_size)
  TORCH_ARG(int64_t, dim) = 128;         // E
  TORCH_ARG(int64_t, heads) = 4;         // H; D = E / H
  TORCH_ARG(int64_t, layers) = 2;
  TORCH_ARG(int64_t, ffn_dim) = 256;
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(bool, causal) = false;       // language models: position n sees positions <= n
  TORCH_ARG(bool, cls_token) = false;    // prepend a learned [CLS] token (id vocab_size)
  TORCH_ARG(std::vector<int64_t>, grid) = {};  // 2-D convSPE: (rows, columns) of each sequence
  TORCH_ARG(AttentionOptions, attention);
  TORCH_ARG(PositionalOptions, positional);
};

// Throws std::invalid_argument naming the first inconsistent option and what would fit.
void check_transformer_options(const TransformerOptions& options);

// Whether the model's SPE draws a code per forward pass (and gate noise per layer): sampled
// sineSPE and convSPE do; no SPE, or sineSPE with the exact code, draws nothing.
bool draws_spe_code(const TransformerOptions& options);

// The model-wide SPE of one forward or decoding step, when shared_code: the module (exact code)
// and the code drawn for the sequence (sampled code), with the row of the first position in it.
// Null members for what the model does not have.
struct SharedSPE {
  SineSPEImpl* sine = nullptr;
  PositionCode code;
};

// What the attention function receives: the positional step and the feature map applied.
struct AttentionInputs {
  at::Tensor q, k, v;              // softmax: positioned q, k (B, N, H, F); linear: phi(q), phi(k) (B, N, H, M)
  PositionedFeatures numerator;    // linear at place features: psi(q), psi(k) (B, N, H, P); else undefined
  SeparableFeatures separable;     // instead, for sineSPE's exact code there: psi's coefficients (N, H, M, J)
};

// What one attention layer keeps between decoding steps (SelfAttentionImpl::start_decoding).
struct AttentionState {
  int64_t position = 0;                 // the position of the next step
  std::unique_ptr<SPECodeStream> code;  // sampled SPE of the layer's own (not shared)
  at::Tensor gate_noise;                // sampled SPE, gated, unless drawn with the code: (H, D, R), one draw for the sequence
  SPECode gated;                        // sampled SPE from a fixed code: the gated code, made once
  at::Tensor gated_rows;                // of a gated sine code: its rows for the one-position filter
  LinearAttentionState linear;          // linear attention: the prefix sums (made at the first step)
  ToeplitzState toeplitz;               // linear attention + toeplitz: the clip window and far sums
  at::Tensor keys, values;              // softmax attention: the keys and values so far (B, t, H, D)
};

// Multi-head self-attention with its positional step. x: (B, N, E) -> (B, N, E).
// Two forms share one composition (prepare): forward for whole sequences (training, scoring) and
// step for one position at a time (decoding), which carries an AttentionState.
class SelfAttentionImpl : public torch::nn::Cloneable<SelfAttentionImpl> {
 public:
  explicit SelfAttentionImpl(const TransformerOptions& options);
  void reset() override;
  // shared: the model's SPE for this forward (code null when the layer draws its own).
  // generator: the draws of the layer's own code and gate noise (see TransformerImpl::forward).
  at::Tensor forward(const at::Tensor& x, const AttentionMask& mask, const SharedSPE& shared,
                     OptionalGenerator generator = c10::nullopt);
  // The state at position 0 of a causal layer, drawing what forward draws (own code, gate noise)
  // from `generator` in the same order. Throws std::invalid_argument for a layer with no
  // recurrent form (2-D convSPE).
  AttentionState start_decoding(OptionalGenerator generator = c10::nullopt) const;
  // x: (B, 1, E) at position state.position -> (B, 1, E), equal to forward's output at that
  // position for the same draws (causal); advances the state. shared: the model's SPE of this
  // position (SharedSPE::code from the model's SPECodeStream).
  at::Tensor step(const at::Tensor& x, AttentionState& state, const SharedSPE& shared);
  // Softmax: the scores' positional bias for queries at start .. start + Nq - 1 and keys at
  // 0 .. Nk - 1, (H, Nq, Nk) (decay, toeplitz), undefined when the layer has none.
  at::Tensor score_bias(int64_t start, int64_t queries, int64_t keys) const;
  TransformerOptions options;
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, output{nullptr};
  RotaryEncoding rotary{nullptr};
  RelativePosition relative{nullptr};
  SineSPE sine_spe{nullptr};  // own SPE when the code is not shared
  ConvSPE conv_spe{nullptr};
  SPEFilter spe_filter{nullptr};
  Decay decay{nullptr};
  ToeplitzBias toeplitz{nullptr};
  FeatureMap feature_map{nullptr};

 private:
  // The one composition of projections, positional step and feature map, for the whole sequence
  // and for one position. x: (B, N, E) at positions start .. start + N - 1; gated: a sampled SPE
  // code after the gate, x at its rows from gated.row (null code otherwise); shared_sine: the
  // model's sineSPE for the exact code (null: the layer's own).
  AttentionInputs prepare(const at::Tensor& x, int64_t start, const PositionCode& gated, SineSPEImpl* shared_sine);
  // q, k (B, N, H, F) -> positioned by rotary or SPE at positions start .. start + N - 1.
  std::pair<at::Tensor, at::Tensor> position(const at::Tensor& q, const at::Tensor& k, int64_t start,
                                             const PositionCode& gated, SineSPEImpl* shared_sine);
  // sineSPE's exact code at positions start .. start + length - 1, gated: the coefficients of
  // separable features of queries and keys (attention/linear.h).
  SeparableFeatures exact_code_coefficients(int64_t length, int64_t start, at::ScalarType dtype,
                                            SineSPEImpl* shared_sine);
  // The attention function on prepared inputs: whole sequences -> (B, N, H, Dv) ...
  at::Tensor attend(const AttentionInputs& in, const AttentionMask& mask);
  // ... and one position, causal, against the state -> (B, 1, H, Dv).
  at::Tensor attend_step(const AttentionInputs& in, AttentionState& state);
  // Sampled SPE while decoding: the gated code of this position.
  PositionCode gated_code_at(AttentionState& state, const PositionCode& shared);
};
TORCH_MODULE(SelfAttention);

// x + attention(norm(x)), then x + feed-forward(norm(x)), with dropout on each branch.
class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  explicit TransformerBlockImpl(const TransformerOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const AttentionMask& mask, const SharedSPE& shared,
                     OptionalGenerator generator = c10::nullopt);
  // x: (B, 1, E) at position state.position -> (B, 1, E), one decoding step (eval mode).
  at::Tensor step(const at::Tensor& x, AttentionState& state, const SharedSPE& shared);
  TransformerOptions options;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  SelfAttention attention{nullptr};
  torch::nn::Linear expand{nullptr}, contract{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  // The second half of forward and step: h + feed-forward(norm(h)).
  at::Tensor feed_forward(const at::Tensor& h);
};
TORCH_MODULE(TransformerBlock);

// What a causal transformer keeps between decoding steps (TransformerImpl::start_decoding).
struct DecodingState {
  int64_t position = 0;                 // the position of the next token
  std::unique_ptr<SPECodeStream> code;  // the model's shared sampled SPE code
  std::vector<AttentionState> layers;   // one per block
};

// tokens (B, N) int64, padding (B, N) bool (true = real token, or undefined) -> (B, N', E),
// N' = N + 1 with a [CLS] token in front.
// SPE draws, in this order, from `generator` (LibTorch's default one when absent): the shared
// code, then for each layer its own code (unless shared) and its gate noise. The recurrent
// decoder (nn/decoder.h) draws the same in the same order, so both see the same code.
class TransformerImpl : public torch::nn::Cloneable<TransformerImpl> {
 public:
  explicit TransformerImpl(const TransformerOptions& options);
  void reset() override;
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& padding = {},
                     OptionalGenerator generator = c10::nullopt);
  // Decoding a causal model token by token: the state before the first token, drawing from
  // `generator` what forward draws, in the same order (so both see the same SPE code). Throws
  // std::invalid_argument for a model with no recurrent form (see SelfAttentionImpl).
  DecodingState start_decoding(OptionalGenerator generator = c10::nullopt) const;
  // tokens (B) at position state.position -> (B, 1, E), the final normed hidden state; equal to
  // forward's output at that position (eval mode). Advances the state.
  at::Tensor step(const at::Tensor& tokens, DecodingState& state);
  // tokens (B, N) at positions start .. start + N - 1 -> the blocks' input (B, N', E): embeddings,
  // the [CLS] token, the absolute encoding, dropout.
  at::Tensor embed(const at::Tensor& tokens, int64_t start = 0);
  // The padding mask matching forward's output (with the [CLS] column when there is one).
  at::Tensor output_padding(const at::Tensor& tokens, const at::Tensor& padding) const;
  // favor: redraws the random features when `steps_done` is a multiple of redraw_interval.
  void after_training_step(int64_t steps_done);
  TransformerOptions options;
  torch::nn::Embedding embedding{nullptr};
  SinusoidalEncoding sinusoidal{nullptr};
  LearnedEncoding learned{nullptr};
  SineSPE sine_spe{nullptr};  // the shared SPE, when shared_code
  ConvSPE conv_spe{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};

 private:
  void check_token_ids(const at::Tensor& tokens) const;  // in [0, vocab_size)
};
TORCH_MODULE(Transformer);

}  // namespace spe::nn
