#include "spe/encoding/relative.h"

#include <ATen/ATen.h>

#include <cmath>

#include "check.h"
#include "ops/input_checks.h"
#include "spe/ops/relative_buckets.h"

namespace spe {

RelativePositionImpl::RelativePositionImpl(const RelativePositionOptions& options_)
    : options(options_) {
  detail::check_positive("RelativePosition", "dim", options.dim());
  detail::check_positive("RelativePosition", "clip (k)", options.clip());
  reset();
}

void RelativePositionImpl::reset() {
  at::NoGradGuard no_grad;
  const int64_t rows = 2 * options.clip() + 1;
  const double std = 1.0 / std::sqrt(static_cast<double>(options.dim()));
  key_table = register_parameter("key_table", at::randn({rows, options.dim()}) * std);
  if (options.on_values()) {
    value_table = register_parameter("value_table", at::randn({rows, options.dim()}) * std);
  }
}

void RelativePositionImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::RelativePosition(dim=" << options.dim() << ", clip=" << options.clip()
         << ", on_values=" << (options.on_values() ? "true" : "false") << ")";
}

at::Tensor RelativePositionImpl::bucket_index(int64_t query_length, int64_t key_length) const {
  auto longs = key_table.options().dtype(at::kLong).requires_grad(false);
  // query i sits at absolute position i + (Nk - Nq)
  at::Tensor i = at::arange(query_length, longs).unsqueeze(1) + (key_length - query_length);
  at::Tensor j = at::arange(key_length, longs).unsqueeze(0);
  return at::clamp(j - i, -options.clip(), options.clip()) + options.clip();  // (Nq, Nk)
}

at::Tensor RelativePositionImpl::key_logits(const at::Tensor& q, int64_t key_length) const {
  TORCH_CHECK(q.dim() == 4 && q.size(3) == options.dim(), "RelativePosition: queries must be (B, N, H, ",
              options.dim(), "), got shape ", q.sizes());
  // per distinct distance: (B, H, Nq, 2k + 1), then spread over the keys
  at::Tensor per_bucket = at::einsum("bihd,rd->bhir", {q, key_table.to(q.scalar_type())});
  if (ops::fused_kernel_takes(per_bucket)) return ops::expand_relative_buckets(per_bucket, key_length);
  auto sizes = per_bucket.sizes().vec();
  sizes.back() = key_length;
  return per_bucket.gather(3, bucket_index(q.size(1), key_length).expand(sizes));  // (B, H, Nq, Nk)
}

at::Tensor RelativePositionImpl::value_term(const at::Tensor& weights) const {
  TORCH_CHECK(options.on_values(), "RelativePosition: built with on_values = false: no value table");
  TORCH_CHECK(weights.dim() == 4, "RelativePosition: weights must be (B, H, Nq, Nk), got shape ",
              weights.sizes());
  // sum the probabilities of the keys in each distance bucket: (B, H, Nq, 2k + 1)
  at::Tensor per_bucket;
  if (ops::fused_kernel_takes(weights)) {
    per_bucket = ops::sum_relative_buckets(weights, options.clip());
  } else {
    auto sizes = weights.sizes().vec();
    sizes.back() = value_table.size(0);
    at::Tensor index = bucket_index(weights.size(2), weights.size(3)).expand(weights.sizes());
    per_bucket = at::zeros(sizes, weights.options()).scatter_add(3, index, weights);
  }
  return at::einsum("bhir,rd->bihd", {per_bucket, value_table.to(weights.scalar_type())});
}

}  // namespace spe
