#pragma once
// Which keys each query may attend to: a key padding mask and/or causality.
#include <ATen/core/Tensor.h>

namespace spe {

struct AttentionMask {
  at::Tensor key_padding;  // (B, Nk) bool, true for real tokens, false for padding; or undefined
  bool causal = false;     // query i sees keys j <= i (aligned at the end when Nq < Nk)

  static AttentionMask none() { return {}; }
  static AttentionMask causal_only() { return {at::Tensor(), true}; }
  static AttentionMask padding(at::Tensor key_padding, bool causal = false) {
    return {std::move(key_padding), causal};
  }

  // Checks key_padding against the batch size and key length: (B, Nk) bool.
  void check(int64_t batch, int64_t key_length) const;
  // Allowed (query, key) pairs: (B or 1, 1, Nq, Nk) bool, or undefined when everything is allowed.
  at::Tensor allowed(int64_t query_length, int64_t key_length, const at::Device& device) const;
};

}  // namespace spe
