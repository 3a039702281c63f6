#include "spe/encoding/absolute.h"

#include <ATen/ATen.h>

#include "check.h"

namespace spe {
namespace {

void check_embeddings(const char* where, const at::Tensor& x, int64_t dim) {
  TORCH_CHECK(x.dim() == 3, where, ": input must be (B, N, E), got shape ", x.sizes());
  TORCH_CHECK(x.size(2) == dim, where, ": input has E = ", x.size(2), " features, expected ", dim);
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), where, ": input must be floating point, got ",
              x.scalar_type());
}

}  // namespace

SinusoidalEncodingImpl::SinusoidalEncodingImpl(const SinusoidalEncodingOptions& options_)
    : options(options_) {
  detail::check_positive("SinusoidalEncoding", "dim", options.dim());
  TORCH_CHECK(options.base() > 1.0, "SinusoidalEncoding: base must be > 1, got ", options.base());
}

void SinusoidalEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::SinusoidalEncoding(dim=" << options.dim() << ", base=" << options.base() << ")";
}

at::Tensor SinusoidalEncodingImpl::table(int64_t length, int64_t start,
                                         const at::TensorOptions& tensor_options) const {
  TORCH_CHECK(start >= 0, "SinusoidalEncoding: start must be >= 0, got ", start);
  // Computed in float64, then cast: positions of long sequences stay exact.
  auto f64 = tensor_options.dtype(at::kDouble);
  at::Tensor positions = at::arange(start, start + length, f64).unsqueeze(1);  // (N, 1)
  at::Tensor pair = at::floor(at::arange(options.dim(), f64) / 2.0);          // i for column j
  at::Tensor angles = positions * at::pow(options.base(), -2.0 * pair / options.dim());
  at::Tensor is_even = (at::arange(options.dim(), tensor_options.dtype(at::kLong)) % 2) == 0;
  return at::where(is_even, at::sin(angles), at::cos(angles)).to(tensor_options.dtype());
}

at::Tensor SinusoidalEncodingImpl::forward(const at::Tensor& x, int64_t start) {
  check_embeddings("SinusoidalEncoding", x, options.dim());
  return x + table(x.size(1), start, x.options());
}

LearnedEncodingImpl::LearnedEncodingImpl(const LearnedEncodingOptions& options_) : options(options_) {
  detail::check_positive("LearnedEncoding", "max_length", options.max_length());
  detail::check_positive("LearnedEncoding", "dim", options.dim());
  reset();
}

void LearnedEncodingImpl::reset() {
  at::NoGradGuard no_grad;
  weight = register_parameter("weight", at::randn({options.max_length(), options.dim()}) * 0.02);
}

void LearnedEncodingImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::LearnedEncoding(max_length=" << options.max_length() << ", dim=" << options.dim()
         << ")";
}

at::Tensor LearnedEncodingImpl::forward(const at::Tensor& x, int64_t start) {
  check_embeddings("LearnedEncoding", x, options.dim());
  TORCH_CHECK(start >= 0, "LearnedEncoding: start must be >= 0, got ", start);
  TORCH_CHECK(start + x.size(1) <= options.max_length(), "LearnedEncoding: positions ", start,
              " .. ", start + x.size(1) - 1, " requested but the table holds max_length = ",
              options.max_length(), " positions");
  return x + weight.narrow(0, start, x.size(1)).to(x.scalar_type());
}

}  // namespace spe
