#include "spe/encoding/rotary.h"

#include <ATen/ATen.h>

#include "check.h"

namespace spe {

RotaryEncodingImpl::RotaryEncodingImpl(const RotaryEncodingOptions& options_) : options(options_) {
  detail::check_positive("RotaryEncoding", "dim", options.dim());
  TORCH_CHECK(options.dim() % 2 == 0, "RotaryEncoding: dim must be even (features rotate in pairs), got ",
              options.dim());
  TORCH_CHECK(options.base() > 1.0, "RotaryEncoding: base must be > 1, got ", options.base());
}

void RotaryEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::RotaryEncoding(dim=" << options.dim() << ", base=" << options.base() << ")";
}

at::Tensor RotaryEncodingImpl::rotate(const at::Tensor& x, const at::Tensor& positions) const {
  TORCH_CHECK(x.dim() == 4, "RotaryEncoding: input must be (B, N, H, D), got shape ", x.sizes());
  TORCH_CHECK(x.size(3) == options.dim(), "RotaryEncoding: input has D = ", x.size(3),
              ", expected ", options.dim());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "RotaryEncoding: input must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(positions.dim() == 1 && positions.size(0) == x.size(1),
              "RotaryEncoding: positions must be (N,) with N = ", x.size(1), ", got ",
              positions.sizes());
  const int64_t half = options.dim() / 2;
  auto f64 = x.options().dtype(at::kDouble);
  at::Tensor inv_freq = at::pow(options.base(), -2.0 * at::arange(half, f64) / options.dim());
  at::Tensor angles = positions.to(f64).unsqueeze(1) * inv_freq;  // (N, D/2)
  at::Tensor cos = at::cos(angles).to(x.scalar_type()).view({1, -1, 1, half});
  at::Tensor sin = at::sin(angles).to(x.scalar_type()).view({1, -1, 1, half});
  at::Tensor pairs = x.unflatten(3, {half, 2});  // (B, N, H, D/2, 2)
  at::Tensor even = pairs.select(4, 0), odd = pairs.select(4, 1);
  return at::stack({even * cos - odd * sin, even * sin + odd * cos}, 4).flatten(3);
}

at::Tensor RotaryEncodingImpl::forward(const at::Tensor& x, int64_t start) {
  TORCH_CHECK(start >= 0, "RotaryEncoding: start must be >= 0, got ", start);
  TORCH_CHECK(x.dim() >= 2, "RotaryEncoding: input must be (B, N, H, D), got shape ", x.sizes());
  return rotate(x, at::arange(start, start + x.size(1), x.options().dtype(at::kLong)));
}

}  // namespace spe
