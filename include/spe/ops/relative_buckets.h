#pragma once
// Shaw's clipped relative positions between per-distance and per-key values, fused on CPU, each
// the other's backward: the O(Nq Nk) steps of Shaw attention (encoding/relative.h) without an
// int64 index per (query, key) pair. Query i of Nq sits at absolute position a = i + Nk - Nq
// (aligned with the keys at their ends, as when decoding with a cache), and key j falls in bucket
// c(i, j) = clamp(j - a, -k, k) + k of the 2k + 1 distances.
#include <ATen/core/Tensor.h>

namespace spe::ops {

// per_bucket: (..., Nq, 2k + 1) -> (..., Nq, Nk):  out[..., i, j] = per_bucket[..., i, c(i, j)]
// (the key logits q_i . w^K_c(i, j) from the 2k + 1 products q_i . w^K_r). CPU, float32 or float64.
at::Tensor expand_relative_buckets(const at::Tensor& per_bucket, int64_t key_length);

// per_key: (..., Nq, Nk) -> (..., Nq, 2k + 1):  out[..., i, r] = sum over j with c(i, j) = r of
// per_key[..., i, j] (the attention weight each query gives to each clipped distance: the value
// term is this times w^V). CPU, float32 or float64.
at::Tensor sum_relative_buckets(const at::Tensor& per_key, int64_t clip);

}  // namespace spe::ops
