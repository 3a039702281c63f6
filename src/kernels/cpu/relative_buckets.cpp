#include "kernels/cpu/relative_buckets.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace spe::kernels::cpu {
namespace {

// Rows per task: a row is Nk values, so a few hundred rows keep a task well above its overhead.
constexpr int64_t kRowsPerTask = 64;

// One row's three runs of keys: [0, left) in bucket 0, [left, right) in buckets
// left - a + k .. right - 1 - a + k, [right, Nk) in bucket 2k. The middle run is empty when every
// key is more than k before a (a < -k - 1 when Nq > Nk): then first_bucket is past the row.
struct KeyRuns {
  int64_t left, right, first_bucket;
};

KeyRuns runs_of(const BucketShape& s, int64_t row) {
  const int64_t a = row % s.query_length + s.key_length - s.query_length;
  const int64_t left = std::clamp<int64_t>(a - s.clip, 0, s.key_length);
  const int64_t right = std::clamp<int64_t>(a + s.clip + 1, left, s.key_length);
  return {left, right, left - a + s.clip};
}

// sum of x[0, n), in four interleaved partial sums (independent additions).
template <typename T>
T sum_of_run(const T* x, int64_t n) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += x[j];
    s1 += x[j + 1];
    s2 += x[j + 2];
    s3 += x[j + 3];
  }
  for (; j < n; ++j) s0 += x[j];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

template <typename T>
void expand_relative_buckets(const BucketShape& s, const T* per_bucket, T* per_key) {
  at::parallel_for(0, s.rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* in = per_bucket + row * s.buckets();
      T* out = per_key + row * s.key_length;
      const KeyRuns r = runs_of(s, row);
      std::fill(out, out + r.left, in[0]);
      if (r.right > r.left) std::copy(in + r.first_bucket, in + r.first_bucket + (r.right - r.left), out + r.left);
      std::fill(out + r.right, out + s.key_length, in[2 * s.clip]);
    }
  });
}

template <typename T>
void sum_relative_buckets(const BucketShape& s, const T* per_key, T* per_bucket) {
  at::parallel_for(0, s.rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const T* in = per_key + row * s.key_length;
      T* out = per_bucket + row * s.buckets();
      const KeyRuns r = runs_of(s, row);
      std::fill(out, out + s.buckets(), T(0));
      if (r.right > r.left) std::copy(in + r.left, in + r.right, out + r.first_bucket);
      // the runs beyond k join the end buckets (which the middle run may also have reached)
      out[0] += sum_of_run(in, r.left);
      out[2 * s.clip] += sum_of_run(in + r.right, s.key_length - r.right);
    }
  });
}

template void expand_relative_buckets<float>(const BucketShape&, const float*, float*);
template void expand_relative_buckets<double>(const BucketShape&, const double*, double*);
template void sum_relative_buckets<float>(const BucketShape&, const float*, float*);
template void sum_relative_buckets<double>(const BucketShape&, const double*, double*);

}  // namespace spe::kernels::cpu
