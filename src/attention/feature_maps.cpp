#include "spe/attention/feature_maps.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace spe {

FeatureMapImpl::FeatureMapImpl(const FeatureMapOptions& options_) : options(options_) {
  TORCH_CHECK(options.dim() > 0, "FeatureMap: dim must be positive, got ", options.dim());
  TORCH_CHECK(options.features() >= 0, "FeatureMap: features (M) must be positive (or 0 for M = D), got ",
              options.features());
  TORCH_CHECK(options.redraw_interval() >= 0,
              "FeatureMap: redraw_interval must be >= 0 (0 = never), got ", options.redraw_interval());
  TORCH_CHECK(options.kind() == FeatureMapKind::favor || options.features() == 0 ||
                  options.features() == options.dim(),
              "FeatureMap: ", choice_name(options.kind(), kFeatureMapKinds), " has M = D = ", options.dim(),
              " features, got features = ", options.features());
  reset();
}

void FeatureMapImpl::reset() {
  if (options.kind() != FeatureMapKind::favor) return;
  projection = register_buffer(
      "projection", orthogonal_random_features(features(), options.dim(), at::TensorOptions()));
}

void FeatureMapImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::FeatureMap(" << choice_name(options.kind(), kFeatureMapKinds) << ", dim=" << options.dim()
         << ", features=" << features();
  if (options.kind() == FeatureMapKind::favor) stream << ", redraw_interval=" << options.redraw_interval();
  stream << ")";
}

int64_t FeatureMapImpl::features() const {
  return options.features() > 0 ? options.features() : options.dim();
}

void FeatureMapImpl::redraw(OptionalGenerator generator) {
  if (options.kind() != FeatureMapKind::favor) return;
  at::NoGradGuard no_grad;
  projection.copy_(orthogonal_random_features(features(), options.dim(), projection.options(), generator));
}

bool FeatureMapImpl::after_training_step(int64_t steps_done, OptionalGenerator generator) {
  if (options.kind() != FeatureMapKind::favor || options.redraw_interval() == 0) return false;
  if (steps_done % options.redraw_interval() != 0) return false;
  redraw(generator);
  return true;
}

at::Tensor FeatureMapImpl::forward(const at::Tensor& x, FeatureRole role) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == options.dim(), "FeatureMap: input must be (..., ",
              options.dim(), "), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "FeatureMap: input must be floating point, got ",
              x.scalar_type());
  switch (options.kind()) {
    case FeatureMapKind::elu: return at::elu(x) + 1.0;
    case FeatureMapKind::relu: return at::relu(x);
    case FeatureMapKind::favor: break;
  }
  at::Tensor w = projection.to(x.scalar_type());
  at::Tensor xs = options.scale_inputs() ? x / std::pow(static_cast<double>(options.dim()), 0.25) : x;
  at::Tensor shift;
  if (role == FeatureRole::query) {
    at::Tensor logits = at::matmul(xs, w.t()) - xs.pow(2).sum(-1, true) / 2.0;
    shift = std::get<0>(logits.max(-1, true)).detach();
  } else {
    shift = (w.pow(2).sum(-1).max() / 2.0).detach();
  }
  return favor_features(xs, w, shift);
}

at::Tensor orthogonal_random_features(int64_t features, int64_t dim, const at::TensorOptions& options,
                                      OptionalGenerator generator) {
  TORCH_CHECK(features > 0 && dim > 0, "orthogonal_random_features: features and dim must be positive, got ",
              features, " and ", dim);
  auto f64 = options.dtype(at::kDouble);
  std::vector<at::Tensor> blocks;
  for (int64_t done = 0; done < features; done += dim) {
    at::Tensor gaussian = at::randn({dim, dim}, generator, f64);
    auto qr = at::linalg_qr(gaussian);
    at::Tensor q = std::get<0>(qr), r = std::get<1>(qr);
    // Fix the signs so that q is Haar-distributed; rows of q.t() are orthonormal.
    q = q * at::sign(at::diagonal(r)).unsqueeze(0);
    blocks.push_back(q.t().narrow(0, 0, std::min(dim, features - done)));
  }
  at::Tensor directions = at::cat(blocks, 0);                                      // (M, D)
  at::Tensor norms = at::randn({features, dim}, generator, f64).norm(2, {1}, true);  // chi_D
  return (directions * norms).to(options.dtype());
}

at::Tensor favor_features(const at::Tensor& x, const at::Tensor& projection, const at::Tensor& shift) {
  const double m = static_cast<double>(projection.size(0));
  at::Tensor logits = at::matmul(x, projection.t()) - x.pow(2).sum(-1, true) / 2.0 - shift;
  return at::exp(logits) / std::sqrt(m);
}

}  // namespace spe
