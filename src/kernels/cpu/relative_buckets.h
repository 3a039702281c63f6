#pragma once
// Shaw's relative positions clipped at k, between a row of 2k + 1 per-distance values and a row of
// Nk per-key values, on raw pointers (no LibTorch types). Query i of Nq sits at absolute position
// a = i + Nk - Nq (queries and keys aligned at their ends) and key j falls in bucket
// c(i, j) = clamp(j - a, -k, k) + k. Each row of keys is three runs: the keys at or beyond distance
// k on the left (bucket 0), the 2k + 1 keys around a (one bucket each), those beyond k on the right
// (bucket 2k), so neither direction reads an index per key.
// Layout, contiguous: per_bucket (rows, 2k + 1), per_key (rows, Nk), row r holding query r mod Nq.
#include <cstdint>

namespace spe::kernels::cpu {

struct BucketShape {
  int64_t rows;           // the leading dimensions times Nq
  int64_t query_length;   // Nq
  int64_t key_length;     // Nk
  int64_t clip;           // k
  int64_t buckets() const { return 2 * clip + 1; }
};

// per_key[r, j] = per_bucket[r, c(i, j)] (written).
template <typename T>
void expand_relative_buckets(const BucketShape& shape, const T* per_bucket, T* per_key);

// per_bucket[r, b] = sum over the keys j with c(i, j) = b of per_key[r, j] (written): the adjoint.
template <typename T>
void sum_relative_buckets(const BucketShape& shape, const T* per_key, T* per_bucket);

}  // namespace spe::kernels::cpu
