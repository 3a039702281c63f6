#include "spe/ops/relative_buckets.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "kernels/cpu/relative_buckets.h"
#include "ops/fresh_tensor.h"
#include "ops/input_checks.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x: (..., Nq, width): its rows, and the other side's width.
kernels::cpu::BucketShape bucket_shape(const at::Tensor& x, int64_t key_length, int64_t clip) {
  return {x.numel() / x.size(-1), x.size(-2), key_length, clip};
}

// k of per_bucket (..., Nq, 2k + 1).
int64_t clip_of(const at::Tensor& per_bucket) { return (per_bucket.size(-1) - 1) / 2; }

// x (..., Nq, width) -> (..., Nq, width').
std::vector<int64_t> with_last(const at::Tensor& x, int64_t width) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = width;
  return sizes;
}

at::Tensor expand_kernel(const at::Tensor& per_bucket_in, int64_t key_length) {
  const at::Tensor per_bucket = per_bucket_in.contiguous();
  at::Tensor out = fresh_tensor(with_last(per_bucket, key_length), per_bucket.options());
  AT_DISPATCH_FLOATING_TYPES(per_bucket.scalar_type(), "expand_relative_buckets", [&] {
    kernels::cpu::expand_relative_buckets<scalar_t>(bucket_shape(per_bucket, key_length, clip_of(per_bucket)),
                                                    per_bucket.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor sum_kernel(const at::Tensor& per_key_in, int64_t clip) {
  const at::Tensor per_key = per_key_in.contiguous();
  at::Tensor out = at::empty(with_last(per_key, 2 * clip + 1), per_key.options());
  AT_DISPATCH_FLOATING_TYPES(per_key.scalar_type(), "sum_relative_buckets", [&] {
    kernels::cpu::sum_relative_buckets<scalar_t>(bucket_shape(per_key, per_key.size(-1), clip),
                                                 per_key.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

struct ExpandFunction : public torch::autograd::Function<ExpandFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& per_bucket, int64_t key_length) {
    ctx->saved_data["clip"] = clip_of(per_bucket);
    return expand_kernel(per_bucket, key_length);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {sum_relative_buckets(grads[0], ctx->saved_data["clip"].toInt()), at::Tensor()};
  }
};

struct SumFunction : public torch::autograd::Function<SumFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& per_key, int64_t clip) {
    ctx->saved_data["key_length"] = per_key.size(-1);
    return sum_kernel(per_key, clip);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {expand_relative_buckets(grads[0], ctx->saved_data["key_length"].toInt()), at::Tensor()};
  }
};

void check_rows(const char* where, const at::Tensor& x, const char* shape) {
  TORCH_CHECK(x.dim() >= 2, where, ": expected ", shape, ", got shape ", x.sizes());
  check_cpu_floating(where, {&x});
}

}  // namespace

at::Tensor expand_relative_buckets(const at::Tensor& per_bucket, int64_t key_length) {
  const char* where = "spe::ops::expand_relative_buckets";
  check_rows(where, per_bucket, "per_bucket (..., Nq, 2k + 1)");
  TORCH_CHECK(per_bucket.size(-1) % 2 == 1, where, ": per_bucket's last dimension must be 2k + 1 (odd), got ",
              per_bucket.sizes());
  TORCH_CHECK(key_length >= 0, where, ": key_length must be >= 0, got ", key_length);
  if (per_bucket.numel() == 0 || key_length == 0) return at::zeros(with_last(per_bucket, key_length), per_bucket.options());
  return ExpandFunction::apply(per_bucket, key_length);
}

at::Tensor sum_relative_buckets(const at::Tensor& per_key, int64_t clip) {
  const char* where = "spe::ops::sum_relative_buckets";
  check_rows(where, per_key, "per_key (..., Nq, Nk)");
  TORCH_CHECK(clip >= 0, where, ": clip must be >= 0, got ", clip);
  if (per_key.numel() == 0) return at::zeros(with_last(per_key, 2 * clip + 1), per_key.options());
  return SumFunction::apply(per_key, clip);
}

}  // namespace spe::ops
