#pragma once
// Softmax (quadratic) attention with masks and optional Shaw relative positions.
#include <ATen/core/Tensor.h>

#include "spe/attention/masks.h"

namespace spe {

class RelativePositionImpl;

// q: (B, Nq, H, D), k: (B, Nk, H, D), v: (B, Nk, H, Dv) -> (B, Nq, H, Dv).
// scores = (q_i . (k_j + a^K_ij)) / sqrt(D); out_i = sum_j p_ij (v_j + a^V_ij).
// score_bias: (H, Nq, Nk) added to the scaled scores (e.g. Decay::score_bias), or undefined.
// A query with no allowed key gets a zero output (never NaN).
at::Tensor softmax_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionMask& mask = {},
                             const RelativePositionImpl* relative = nullptr, const at::Tensor& score_bias = {});

// The attention probabilities alone: (B, H, Nq, Nk).
at::Tensor softmax_attention_weights(const at::Tensor& q, const at::Tensor& k,
                                     const AttentionMask& mask = {},
                                     const RelativePositionImpl* relative = nullptr,
                                     const at::Tensor& score_bias = {});

// Shared checks of the (q, k, v) triple for every attention: ranks, shapes, dtypes, devices.
void check_qkv(const char* where, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace spe
