#include "spe/attention/masks.h"

#include <ATen/ATen.h>

namespace spe {

void AttentionMask::check(int64_t batch, int64_t key_length) const {
  if (!key_padding.defined()) return;
  TORCH_CHECK(key_padding.scalar_type() == at::kBool,
              "AttentionMask: key_padding must be bool (true = real token), got ",
              key_padding.scalar_type());
  TORCH_CHECK(key_padding.dim() == 2 && key_padding.size(0) == batch &&
                  key_padding.size(1) == key_length,
              "AttentionMask: key_padding must be (B, Nk) = (", batch, ", ", key_length, "), got ",
              key_padding.sizes());
}

at::Tensor AttentionMask::allowed(int64_t query_length, int64_t key_length,
                                  const at::Device& device) const {
  at::Tensor result;
  if (causal) {
    auto longs = at::TensorOptions().dtype(at::kLong).device(device);
    at::Tensor i = at::arange(query_length, longs).unsqueeze(1) + (key_length - query_length);
    at::Tensor j = at::arange(key_length, longs).unsqueeze(0);
    result = (j <= i).view({1, 1, query_length, key_length});
  }
  if (key_padding.defined()) {
    at::Tensor keys = key_padding.to(device).view({key_padding.size(0), 1, 1, key_length});
    result = result.defined() ? at::logical_and(result, keys) : keys;
  }
  return result;
}

}  // namespace spe
