#include "spe/encoding/spe_code.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace spe {

namespace {

// Omega of the phases (..., K): interleaved [cos_0, sin_0, cos_1, sin_1, ...], (..., 2K).
at::Tensor oscillators(const at::Tensor& phases) { return at::stack({at::cos(phases), at::sin(phases)}, -1).flatten(-2); }

}  // namespace

std::pair<at::Tensor, at::Tensor> sine_code_at(const SineCodeFactors& c, const at::Tensor& positions) {
  TORCH_CHECK(positions.dim() == 1, "sine code: positions must be 1-D (N,), got shape ", positions.sizes());
  const auto dtype = c.weights.scalar_type();
  // phases in float64: (N, H, D, K)
  at::Tensor phase_k = 2.0 * M_PI * c.frequencies.unsqueeze(0) * positions.to(at::kDouble).view({-1, 1, 1, 1});
  at::Tensor phase_q = phase_k + c.offsets.unsqueeze(0);
  auto code_of = [&](const at::Tensor& phases) {
    at::Tensor omega = oscillators(phases).to(dtype);  // (N, H, D, 2K)
    at::Tensor code = at::einsum("nhdj,hdjr->nhdr", {omega, c.weights});
    if (c.gate_scale.defined()) code = code * c.gate_scale.unsqueeze(-1);
    if (c.gate_shift.defined()) code = code + c.gate_shift;
    return code;
  };
  return {code_of(phase_q), code_of(phase_k)};
}

at::Tensor sine_step_rows(const SineCodeFactors& c) {
  const at::Tensor scaled = c.gate_scale.defined() ? c.weights * c.gate_scale.unsqueeze(-1).unsqueeze(-1) : c.weights;
  const at::Tensor shift = c.gate_shift.defined() ? c.gate_shift.unsqueeze(2) : at::zeros_like(c.weights.narrow(2, 0, 1));
  return at::cat({scaled, shift}, 2).contiguous();  // (H, D, 2K + 1, R)
}

at::Tensor sine_step_coefficients(const SineCodeFactors& c, int64_t position) {
  TORCH_CHECK(position >= 0 && position < c.length, "sine code: position ", position, " is outside the code's ",
              c.length, " positions");
  // As sine_code_at: phases 2 pi f n (+ theta for the queries) in float64.
  const at::Tensor phase_k = 2.0 * M_PI * c.frequencies * static_cast<double>(position);  // (H, D, K)
  const at::Tensor phases = at::stack({phase_k + c.offsets, phase_k});                    // (2, H, D, K)
  const at::Tensor omega = oscillators(phases);                                           // (2, H, D, 2K)
  return at::cat({omega, at::ones_like(omega.narrow(-1, 0, 1))}, -1).to(c.weights.scalar_type());
}

SPECode SPECode::materialise() const {
  if (materialised()) return *this;
  auto [q, k] = sine_code_at(*sine, at::arange(sine->length, sine->weights.options().dtype(at::kLong)));
  SPECode code(q, k);
  code.gate_noise = gate_noise;
  return code;
}

namespace {

void check_code_tensors(const SPECode& code) {
  if (!code.materialised()) {
    TORCH_CHECK(code.sine.has_value() && code.sine->weights.defined() && code.sine->weights.dim() == 4,
                "SPE code: neither qbar/kbar nor sine factors are set");
    return;
  }
  TORCH_CHECK(code.qbar.defined() && code.kbar.defined(), "SPE code: qbar and kbar must be defined");
  TORCH_CHECK(code.qbar.dim() == 4, "SPE code: qbar must be (N, H, D, R), got shape ",
              code.qbar.sizes());
  TORCH_CHECK(code.qbar.sizes() == code.kbar.sizes(), "SPE code: qbar ", code.qbar.sizes(),
              " and kbar ", code.kbar.sizes(), " must have the same shape");
  TORCH_CHECK(code.qbar.scalar_type() == code.kbar.scalar_type(), "SPE code: qbar is ",
              code.qbar.scalar_type(), " but kbar is ", code.kbar.scalar_type());
  TORCH_CHECK(code.qbar.device() == code.kbar.device(), "SPE code: qbar is on ",
              code.qbar.device(), " but kbar is on ", code.kbar.device());
}

}  // namespace

void check_code(const SPECode& code) {
  check_code_tensors(code);
  const at::Tensor& eps = code.gate_noise;
  TORCH_CHECK(!eps.defined() || (eps.dim() == 3 && eps.size(0) == code.heads() && eps.size(1) == code.dim() &&
                                 eps.size(2) == code.realizations()),
              "SPE code: its gate noise must be (H, D, R) = (", code.heads(), ", ", code.dim(), ", ",
              code.realizations(), "), got shape ", eps.sizes());
}

at::Tensor empirical_kernel(const SPECode& factored_or_not) {
  check_code(factored_or_not);
  const SPECode code = factored_or_not.materialise();
  const int64_t n = code.length();
  std::vector<at::Tensor> per_lag;
  per_lag.reserve(2 * n - 1);
  for (int64_t lag = -(n - 1); lag <= n - 1; ++lag) {
    // pairs (m, m - lag) with both inside [0, n)
    const int64_t first_m = std::max<int64_t>(0, lag);
    const int64_t count = n - std::abs(lag);
    at::Tensor q = code.qbar.narrow(0, first_m, count);
    at::Tensor k = code.kbar.narrow(0, first_m - lag, count);
    per_lag.push_back((q * k).sum(at::IntArrayRef{0, 3}) / static_cast<double>(count));
  }
  return at::stack(per_lag, -1);  // (H, D, 2N - 1)
}

}  // namespace spe
