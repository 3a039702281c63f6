#include "spe/encoding/rotary.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "check.h"

namespace spe {
namespace {

// YaRN's ramp: pairs with fewer than kYarnLow periods within the training length are
// interpolated, those with more than kYarnHigh kept, those between blended linearly.
constexpr double kYarnLow = 1.0, kYarnHigh = 32.0;

void check_scaling(const RotaryEncodingOptions& o) {
  if (!(o.factor() >= 1.0) || !std::isfinite(o.factor()))
    throw std::invalid_argument(fmt::format("RotaryEncoding: the scaling factor is {}, expected a finite value >= 1 "
                                            "(the evaluated length over the trained one)",
                                            o.factor()));
  if (o.scaling() == RotaryScaling::yarn && o.original_length() < 1)
    throw std::invalid_argument("RotaryEncoding: yarn scaling needs original_length, the training length");
  if (o.scaling() == RotaryScaling::ntk && o.dim() < 4)
    throw std::invalid_argument(fmt::format("RotaryEncoding: ntk scaling needs dim >= 4, got {}", o.dim()));
}

}  // namespace

RotaryEncodingImpl::RotaryEncodingImpl(const RotaryEncodingOptions& options_) : options(options_) {
  detail::check_positive("RotaryEncoding", "dim", options.dim());
  TORCH_CHECK(options.dim() % 2 == 0, "RotaryEncoding: dim must be even (features rotate in pairs), got ",
              options.dim());
  TORCH_CHECK(options.base() > 1.0, "RotaryEncoding: base must be > 1, got ", options.base());
  check_scaling(options);
}

void RotaryEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::RotaryEncoding(dim=" << options.dim() << ", base=" << options.base();
  if (options.scaling() != RotaryScaling::none)
    stream << ", scaling=" << choice_name(options.scaling(), kRotaryScalings) << " x" << options.factor();
  stream << ")";
}

void RotaryEncodingImpl::set_scaling(RotaryScaling scaling, double factor, int64_t original_length) {
  RotaryEncodingOptions changed = options;
  changed.scaling(scaling).factor(factor).original_length(original_length);
  check_scaling(changed);
  options = changed;
}

at::Tensor RotaryEncodingImpl::frequencies() const {
  const double d = static_cast<double>(options.dim()), s = options.factor();
  const double base = options.scaling() == RotaryScaling::ntk ? options.base() * std::pow(s, d / (d - 2.0))
                                                              : options.base();
  at::Tensor theta = at::pow(base, -2.0 * at::arange(options.dim() / 2, at::kDouble) / d);  // (D / 2,)
  if (options.scaling() == RotaryScaling::linear) return theta / s;
  if (options.scaling() != RotaryScaling::yarn) return theta;
  at::Tensor periods = static_cast<double>(options.original_length()) * theta / (2.0 * M_PI);
  at::Tensor kept = ((periods - kYarnLow) / (kYarnHigh - kYarnLow)).clamp(0.0, 1.0);
  return (1.0 - kept) * theta / s + kept * theta;
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
  at::Tensor angles = positions.to(at::kDouble).unsqueeze(1) * frequencies().to(x.device());  // (N, D/2)
  // YaRN's temperature: q and k each scaled by 0.1 ln s + 1, their product by its square.
  const double magnitude = options.scaling() == RotaryScaling::yarn ? 0.1 * std::log(options.factor()) + 1.0 : 1.0;
  at::Tensor cos = (magnitude * at::cos(angles)).to(x.scalar_type()).view({1, -1, 1, half});
  at::Tensor sin = (magnitude * at::sin(angles)).to(x.scalar_type()).view({1, -1, 1, half});
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
