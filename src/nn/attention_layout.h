#pragma once
// The feature counts of an attention layer's data path, from its options: what SelfAttention
// builds (transformer.cpp) and what the fused decoding step reads (fused_decoder.cpp) agree by
// asking the same functions.
#include <cstdint>

#include "spe/nn/transformer.h"

namespace spe::nn {

inline bool is_spe(PositionalKind kind) { return kind == PositionalKind::sine_spe || kind == PositionalKind::conv_spe; }

inline int64_t head_dim(const TransformerOptions& o) { return o.dim() / o.heads(); }

// place features applies to rotary and SPE under a feature map; the other kinds act elsewhere (on x,
// inside softmax attention) and softmax attention has no feature map, so they ignore it.
inline bool on_features(const TransformerOptions& o) {
  const PositionalKind kind = o.positional().kind();
  return o.positional().place() == PositionalPlace::features && o.attention().kind() != AttentionKind::softmax &&
         (kind == PositionalKind::rotary || is_spe(kind));
}

inline bool exact_code(const TransformerOptions& o) {
  return o.positional().kind() == PositionalKind::sine_spe && o.positional().code() == SPECodeKind::exact;
}

// J, exact sineSPE's coefficients per feature: the cosine and sine of each of the K sines, and
// the gate's constant when gated.
inline int64_t exact_columns(const TransformerOptions& o) {
  return 2 * o.positional().sines() + (o.positional().gated() ? 1 : 0);
}

// The features of phi(q), phi(k) for the feature map's input of `dim` features.
inline int64_t mapped_dim(const AttentionOptions& a, int64_t dim) {
  return a.kind() == AttentionKind::favor && a.features() > 0 ? a.features() : dim;
}

// The features the positional step acts on: those of q, k (place inputs) or of phi(q), phi(k).
inline int64_t positioned_dim(const TransformerOptions& o) {
  return on_features(o) ? mapped_dim(o.attention(), head_dim(o)) : head_dim(o);
}

// The features the positional step gives: R after sampled SPE, positioned_dim J after exact
// sineSPE, positioned_dim otherwise.
inline int64_t position_step_dim(const TransformerOptions& o) {
  if (!is_spe(o.positional().kind())) return positioned_dim(o);
  return exact_code(o) ? positioned_dim(o) * exact_columns(o) : o.positional().realizations();
}

// The features of q and k after a positional step at place inputs (D at place features, where
// q and k go to the feature map unpositioned).
inline int64_t filtered_dim(const TransformerOptions& o) { return on_features(o) ? head_dim(o) : position_step_dim(o); }

}  // namespace spe::nn
