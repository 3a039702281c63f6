#include "spe/encoding/spe_filter.h"

#include <ATen/ATen.h>

#include <cmath>

#include "check.h"
#include "orthogonal_rows.h"
#include "ops/input_checks.h"
#include "spe/ops/apply_spe_code.h"

namespace spe {

SPEFilterImpl::SPEFilterImpl(const SPEFilterOptions& options_) : options(options_) {
  detail::check_positive("SPEFilter", "heads", options.heads());
  detail::check_positive("SPEFilter", "dim", options.dim());
  TORCH_CHECK(std::isfinite(options.gate_mean()), "SPEFilter: gate_mean must be finite, got ", options.gate_mean());
  reset();
}

void SPEFilterImpl::reset() {
  if (options.gated()) {
    at::NoGradGuard no_grad;
    gate = register_parameter("gate", at::randn({options.heads(), options.dim()}) + options.gate_mean());
  }
}

void SPEFilterImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::SPEFilter(heads=" << options.heads() << ", dim=" << options.dim()
         << ", gated=" << (options.gated() ? "true" : "false") << ", gate_mean=" << options.gate_mean()
         << ", noise=" << choice_name(options.noise(), kSPENoises) << ")";
}

namespace {

// eps (H, D, R) with entries of variance 1 -> the gate's noise: eps / (D R)^(1/4), so that a gated
// code's constant s |eps|^2 / sqrt(D R) is on the scale of the code's own products.
at::Tensor scaled_gate_noise(const at::Tensor& eps) {
  return eps / std::pow(static_cast<double>(eps.size(1) * eps.size(2)), 0.25);
}

}  // namespace

at::Tensor SPEFilterImpl::sample_gate_noise(int64_t realizations, at::ScalarType dtype,
                                            OptionalGenerator generator) const {
  detail::check_positive("SPEFilter", "realizations (R)", realizations);
  if (!options.gated()) return {};
  const auto plain = gate.options().dtype(dtype).requires_grad(false);
  return scaled_gate_noise(options.noise() == SPENoise::orthogonal
                               ? detail::orthogonal_rows(options.heads(), options.dim(), 1, realizations, generator, plain)
                               : at::randn({options.heads(), options.dim(), realizations}, generator, plain));
}

at::Tensor SPEFilterImpl::gate_noise_for(const SPECode& code, OptionalGenerator generator) const {
  check_code(code);
  if (!options.gated()) return {};
  if (code.gate_noise.defined()) return scaled_gate_noise(code.gate_noise.to(code.scalar_type()));
  return sample_gate_noise(code.realizations(), code.scalar_type(), generator);
}

SPECode SPEFilterImpl::apply_gate(const SPECode& code, OptionalGenerator generator) const {
  return gated_code(code, gate_noise_for(code, generator));
}

SPECode SPEFilterImpl::gated_code(const SPECode& code, const at::Tensor& gate_noise) const {
  check_code(code);
  TORCH_CHECK(code.heads() == options.heads() && code.dim() == options.dim(),
              "SPEFilter: code has (H, D) = (", code.heads(), ", ", code.dim(),
              ") but the filter was built for (", options.heads(), ", ", options.dim(), ")");
  if (!options.gated()) return code;
  const auto dtype = code.scalar_type();
  TORCH_CHECK(gate_noise.defined() && gate_noise.sizes() == at::IntArrayRef({options.heads(), options.dim(), code.realizations()}) &&
                  gate_noise.scalar_type() == dtype,
              "SPEFilter: the gate noise must be (H, D, R) = (", options.heads(), ", ", options.dim(), ", ",
              code.realizations(), ") ", dtype);
  at::Tensor s = at::sigmoid(gate).to(dtype);                   // (H, D)
  at::Tensor keep = at::sqrt(1.0 - s), noise = at::sqrt(s).unsqueeze(-1) * gate_noise;  // (H, D), (H, D, R)
  if (code.materialised()) {
    at::Tensor k = keep.unsqueeze(-1);
    return {k * code.qbar + noise, k * code.kbar + noise};
  }
  // Factored: code' = keep (a P + c) + noise = (keep a) P + (keep c + noise).
  SineCodeFactors f = *code.sine;
  f.gate_shift = f.gate_shift.defined() ? keep.unsqueeze(-1) * f.gate_shift + noise : noise;
  f.gate_scale = f.gate_scale.defined() ? keep * f.gate_scale : keep;
  return SPECode::factored(f);
}

at::Tensor SPEFilterImpl::gate_features(const at::Tensor& x, const at::Tensor& features) const {
  TORCH_CHECK(x.dim() == 4 && x.size(2) == options.heads() && x.size(3) == options.dim(),
              "SPEFilter: input must be (B, N, H, D) with H = ", options.heads(), ", D = ", options.dim(), ", got ",
              x.sizes());
  TORCH_CHECK(features.dim() == 5 && features.sizes().slice(0, 4) == x.sizes(),
              "SPEFilter: exact features must be (B, N, H, D, J) with (B, N, H, D) = ", x.sizes(), ", got ",
              features.sizes());
  if (!options.gated()) return features.flatten(3);
  const at::Tensor s = at::sigmoid(gate).to(x.scalar_type()).unsqueeze(-1);  // (H, D, 1)
  return at::cat({at::sqrt(1.0 - s) * features, at::sqrt(s) * x.unsqueeze(-1)}, -1).flatten(3);
}

at::Tensor SPEFilterImpl::gate_coefficients(const at::Tensor& coefficients) const {
  TORCH_CHECK(coefficients.dim() == 4 && coefficients.size(1) == options.heads() && coefficients.size(2) == options.dim(),
              "SPEFilter: exact coefficients must be (N, H, D, J) with (H, D) = (", options.heads(), ", ",
              options.dim(), "), got ", coefficients.sizes());
  if (!options.gated()) return coefficients;
  const at::Tensor s = at::sigmoid(gate).to(coefficients.scalar_type()).unsqueeze(-1);  // (H, D, 1)
  return at::cat({at::sqrt(1.0 - s) * coefficients, at::sqrt(s).expand_as(coefficients.narrow(-1, 0, 1))}, -1);
}

at::Tensor SPEFilterImpl::expected_kernel(const at::Tensor& ungated, int64_t realizations) const {
  detail::check_positive("SPEFilter", "realizations (R)", realizations);
  TORCH_CHECK(ungated.dim() >= 2 && ungated.size(0) == options.heads() &&
                  ungated.size(1) == options.dim(),
              "SPEFilter: expected kernel must be (H, D, lags...) with (H, D) = (", options.heads(),
              ", ", options.dim(), "), got ", ungated.sizes());
  if (!options.gated()) return ungated;
  auto shape = gate.sizes().vec();
  shape.resize(ungated.dim(), 1);
  at::Tensor s = at::sigmoid(gate).view(shape).to(ungated.scalar_type());
  return (1.0 - s) * ungated + s * std::sqrt(static_cast<double>(realizations) / options.dim());
}

namespace {

// Queries or keys against the code that will filter them: rank, (H, D), length, dtype, device.
void check_against_code(const at::Tensor& x, int64_t length, int64_t heads, int64_t dim, at::ScalarType dtype,
                        const at::Device& device) {
  TORCH_CHECK(x.dim() == 4, "SPE filter: queries/keys must be (B, N, H, D), got shape ", x.sizes());
  TORCH_CHECK(x.size(2) == heads && x.size(3) == dim, "SPE filter: queries/keys have (H, D) = (", x.size(2), ", ",
              x.size(3), ") but the code has (", heads, ", ", dim, ")");
  TORCH_CHECK(x.size(1) <= length, "SPE filter: sequence length ", x.size(1), " exceeds the code length ", length);
  TORCH_CHECK(x.scalar_type() == dtype, "SPE filter: queries/keys are ", x.scalar_type(), " but the code is ", dtype);
  TORCH_CHECK(x.device() == device, "SPE filter: queries/keys are on ", x.device(), " but the code is on ", device);
}

}  // namespace

at::Tensor spe_apply_code(const at::Tensor& x, const at::Tensor& code) {
  TORCH_CHECK(code.dim() == 4, "SPE filter: code must be (N, H, D, R), got shape ", code.sizes());
  check_against_code(x, code.size(0), code.size(1), code.size(2), code.scalar_type(), code.device());
  // (B, N, H, D) x (N, H, D, R) -> (B, N, H, R): on CPU the fused op, one small product per (n, h)
  if (ops::fused_kernel_takes(x)) return ops::apply_spe_code(x, code);
  return at::einsum("bnhd,nhdr->bnhr", {x, code.narrow(0, 0, x.size(1))});
}

std::pair<at::Tensor, at::Tensor> SPEFilterImpl::forward(const at::Tensor& q, const at::Tensor& k,
                                                         const SPECode& code,
                                                         OptionalGenerator generator) {
  return filter(q, k, apply_gate(code, generator));
}

std::pair<at::Tensor, at::Tensor> SPEFilterImpl::filter(const at::Tensor& q, const at::Tensor& k,
                                                        const SPECode& gated, int64_t first_row,
                                                        const at::Tensor& step_coefficients,
                                                        const at::Tensor& step_rows) const {
  TORCH_CHECK(q.sizes() == k.sizes(), "SPEFilter: queries ", q.sizes(), " and keys ", k.sizes(),
              " must have the same shape (B, N, H, D)");
  check_code(gated);
  TORCH_CHECK(first_row >= 0, "SPEFilter: first_row must be >= 0, got ", first_row);
  TORCH_CHECK(q.dim() != 4 || q.size(1) <= gated.length() - first_row, "SPEFilter: ", q.size(1),
              " positions from row ", first_row, " exceed the code length ", gated.length());
  const bool fused = !gated.materialised() && ops::fused_kernel_takes(q) && gated.sine->weights.device().is_cpu();
  if (fused) {
    check_against_code(q, gated.length() - first_row, gated.heads(), gated.dim(), gated.scalar_type(),
                       gated.sine->weights.device());
    if (step_rows.defined())
      return {ops::sine_spe_filter_position(q, step_coefficients[0], step_rows),
              ops::sine_spe_filter_position(k, step_coefficients[1], step_rows)};
    return {ops::sine_spe_filter(q, *gated.sine, true, first_row), ops::sine_spe_filter(k, *gated.sine, false, first_row)};
  }
  if (!gated.materialised()) {  // another device or dtype: the code of these rows alone
    const at::Tensor rows = at::arange(first_row, first_row + q.size(1), gated.sine->weights.options().dtype(at::kLong));
    auto [qbar, kbar] = sine_code_at(*gated.sine, rows);
    return {spe_apply_code(q, qbar), spe_apply_code(k, kbar)};
  }
  return {spe_apply_code(q, gated.qbar.narrow(0, first_row, q.size(1))),
          spe_apply_code(k, gated.kbar.narrow(0, first_row, q.size(1)))};
}

}  // namespace spe
