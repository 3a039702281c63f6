#pragma once
// The relative distances m - n that the distance-based encodings (decay, toeplitz) turn into
// weights or biases, with their argument checks.
#include <ATen/ATen.h>

#include "check.h"

namespace spe::detail {

// Every lag of a sequence of `length` positions, -(length - 1) .. length - 1: (2 length - 1,) int64.
inline at::Tensor all_lags(const char* where, int64_t length, const at::Device& device) {
  check_positive(where, "length", length);
  return at::arange(-(length - 1), length, at::TensorOptions().dtype(at::kLong).device(device));
}

// m - n for queries at start .. start + Nq - 1 and keys at 0 .. Nk - 1: (Nq, Nk) int64.
inline at::Tensor query_key_lags(const char* where, int64_t start, int64_t queries, int64_t keys,
                                 const at::Device& device) {
  TORCH_CHECK(start >= 0, where, ": start must be >= 0, got ", start);
  check_positive(where, "queries", queries);
  check_positive(where, "keys", keys);
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  return at::arange(start, start + queries, longs).unsqueeze(1) - at::arange(keys, longs).unsqueeze(0);
}

}  // namespace spe::detail
