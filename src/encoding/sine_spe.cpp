// sineSPE. For head h, feature d, sine k (f = sigmoid(freqs)/2, theta = offsets,
// lambda = softplus(gains)) and position t:
//   Omega_q(t) = interleave_k [cos(2 pi f_k t + theta_k), sin(2 pi f_k t + theta_k)]   (2K)
//   Omega_k(t) = interleave_k [cos(2 pi f_k t),           sin(2 pi f_k t)]             (2K)
//   Z ~ N(0, 1) (H, D, 2K, R) / sqrt(2K), row j scaled by lambda_{j/2}
//   Qbar(t) = Omega_q(t) Z / (R D)^(1/4),   Kbar(t) = Omega_k(t) Z / (R D)^(1/4)
// so E[sum_r Qbar(m) Kbar(n)] = sqrt(R / D) / (2K) sum_k lambda_k^2 cos(2 pi f_k (m - n) + theta_k).
#include "spe/encoding/sine_spe.h"

#include <ATen/ATen.h>

#include <cmath>

#include "check.h"
#include "orthogonal_rows.h"

namespace spe {
namespace {

constexpr double kTwoPi = 2.0 * M_PI;

// Raw frequencies whose angular frequencies 2 pi sigmoid(freqs) / 2 are base^(-i / (D K)),
// i = d K + k, the same for every head: (H, D, K).
at::Tensor spread_frequencies(int64_t heads, int64_t dim, int64_t sines) {
  constexpr double kBase = 10000.0;
  at::Tensor i = at::arange(dim * sines, at::kDouble);
  at::Tensor f = at::pow(kBase, -i / static_cast<double>(dim * sines)) / kTwoPi;  // cycles per position, < 1/2
  at::Tensor raw = at::logit(2.0 * f);                                          // sigmoid(raw) / 2 = f
  return raw.view({1, dim, sines}).expand({heads, dim, sines}).to(at::kFloat).clone();
}

}  // namespace

SineSPEImpl::SineSPEImpl(const SineSPEOptions& options_) : options(options_) {
  detail::check_positive("SineSPE", "heads", options.heads());
  detail::check_positive("SineSPE", "dim", options.dim());
  detail::check_positive("SineSPE", "sines (K)", options.sines());
  detail::check_positive("SineSPE", "realizations (R)", options.realizations());
  reset();
}

void SineSPEImpl::reset() {
  const std::vector<int64_t> shape{options.heads(), options.dim(), options.sines()};
  at::NoGradGuard no_grad;
  // Reference initialisation: N(0, 1); gains /= sqrt(||gains||_K) / 2; freqs -= 4.
  at::Tensor f = at::randn(shape) - 4.0;
  // (drawn either way, so that the offsets and gains are the same draws under both initialisations)
  if (options.init() == SineInit::spread) f = spread_frequencies(options.heads(), options.dim(), options.sines());
  at::Tensor o = at::randn(shape);
  at::Tensor g = at::randn(shape);
  g = g / (at::sqrt(g.norm(2, {-1}, /*keepdim=*/true)) / 2.0);
  freqs = register_parameter("freqs", f);
  offsets = register_parameter("offsets", o);
  gains = register_parameter("gains", g);
}

void SineSPEImpl::pretty_print(std::ostream& stream) const {
  stream << "spe::SineSPE(heads=" << options.heads() << ", dim=" << options.dim()
         << ", sines=" << options.sines() << ", realizations=" << options.realizations()
         << ", noise=" << choice_name(options.noise(), kSPENoises) << (options.gate_noise() ? ", gate_noise=true" : "")
         << ")";
}

at::Tensor SineSPEImpl::sample_noise(int64_t realizations, OptionalGenerator generator) const {
  detail::check_positive("SineSPE", "realizations (R)", realizations);
  const int64_t two_k = 2 * options.sines(), rows = two_k + (options.gate_noise() ? 1 : 0);
  const auto plain = gains.options().requires_grad(false);
  at::Tensor z = options.noise() == SPENoise::orthogonal
                     ? detail::orthogonal_rows(options.heads(), options.dim() * rows, rows, realizations, generator, plain)
                           .view({options.heads(), options.dim(), rows, realizations})
                     : at::randn({options.heads(), options.dim(), rows, realizations}, generator, plain);
  // lambda repeated for the cos and the sin row of each sine, 1 for the gate's row: (H, D, rows)
  at::Tensor scale = at::softplus(gains).repeat_interleave(2, -1) / std::sqrt(static_cast<double>(two_k));
  if (options.gate_noise()) scale = at::constant_pad_nd(scale, {0, 1}, 1.0);
  return z * scale.unsqueeze(-1);  // (H, D, rows, R)
}

SineCodeFactors SineSPEImpl::factors(const at::Tensor& noise, int64_t length) const {
  const int64_t two_k = 2 * options.sines();
  TORCH_CHECK(noise.dim() == 4 && noise.size(0) == options.heads() && noise.size(1) == options.dim() &&
                  (noise.size(2) == two_k || noise.size(2) == two_k + 1),
              "SineSPE: noise must be (H, D, 2K, R) or, with the gate's row, (H, D, 2K + 1, R) = (", options.heads(),
              ", ", options.dim(), ", ", two_k, " [+ 1], R), got ", noise.sizes());
  const double scale = std::pow(static_cast<double>(noise.size(3) * options.dim()), 0.25);
  SineCodeFactors f;
  // Frequencies and offsets in float64 whatever the parameters' dtype: 2 pi f t loses its
  // precision in float32 once t reaches the thousands.
  f.frequencies = at::sigmoid(freqs.to(at::kDouble)) / 2.0;
  f.offsets = offsets.to(at::kDouble);
  f.weights = noise.narrow(2, 0, two_k).to(freqs.scalar_type()) / scale;
  f.length = length;
  return f;
}

namespace {

// The gate's row of the noise (H, D, R), or undefined when it has none.
at::Tensor gate_row(const at::Tensor& noise, int64_t two_k) {
  return noise.size(2) > two_k ? noise.select(2, two_k) : at::Tensor();
}

}  // namespace

SPECode SineSPEImpl::code(const at::Tensor& noise, int64_t length) const {
  SPECode code = SPECode::factored(factors(noise, length));
  code.gate_noise = gate_row(noise, 2 * options.sines());
  return code;
}

SPECode SineSPEImpl::code_at(const at::Tensor& positions, const at::Tensor& noise) const {
  TORCH_CHECK(positions.dim() == 1, "SineSPE: positions must be 1-D (N,), got shape ", positions.sizes());
  auto [qbar, kbar] = sine_code_at(factors(noise, positions.size(0)), positions);
  SPECode code(qbar, kbar);
  code.gate_noise = gate_row(noise, 2 * options.sines());
  return code;
}

SPECode SineSPEImpl::forward(int64_t length, c10::optional<int64_t> realizations,
                             OptionalGenerator generator) {
  detail::check_positive("SineSPE", "length", length);
  return code(sample_noise(realizations.value_or(options.realizations()), generator), length);
}

at::Tensor SineSPEImpl::exact_coefficients(int64_t length, bool query_side, int64_t start, at::ScalarType dtype) const {
  TORCH_CHECK(length >= 0, "SineSPE: length must be >= 0, got ", length);
  TORCH_CHECK(start >= 0, "SineSPE: start must be >= 0, got ", start);
  auto f64 = freqs.options().dtype(at::kDouble);
  at::Tensor positions = at::arange(start, start + length, f64).view({-1, 1, 1, 1});  // (N, 1, 1, 1)
  // (N, H, D, K) phases in float64, as for the sampled code
  at::Tensor phases = kTwoPi * (at::sigmoid(freqs.to(at::kDouble)) / 2.0) * positions;
  if (query_side) phases = phases + offsets.to(at::kDouble);
  at::Tensor omega = at::stack({at::cos(phases), at::sin(phases)}, -1).flatten(-2).to(dtype);
  return omega * exact_scales(dtype);  // (N, H, D, 2K)
}

at::Tensor SineSPEImpl::exact_scales(at::ScalarType dtype) const {
  return at::softplus(gains).repeat_interleave(2, -1).to(dtype) / std::sqrt(2.0 * static_cast<double>(options.sines()));
}

at::Tensor SineSPEImpl::exact_features(const at::Tensor& x, bool query_side, int64_t start) const {
  TORCH_CHECK(x.dim() == 4 && x.size(2) == options.heads() && x.size(3) == options.dim(),
              "SineSPE: input must be (B, N, H, D) with H = ", options.heads(), ", D = ", options.dim(), ", got ",
              x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "SineSPE: input must be floating point, got ", x.scalar_type());
  return x.unsqueeze(-1) * exact_coefficients(x.size(1), query_side, start, x.scalar_type()).unsqueeze(0);
}

at::Tensor SineSPEImpl::expected_kernel(int64_t length, c10::optional<int64_t> realizations) const {
  detail::check_positive("SineSPE", "length", length);
  const int64_t r = realizations.value_or(options.realizations());
  detail::check_positive("SineSPE", "realizations (R)", r);
  auto f64 = freqs.options().dtype(at::kDouble).requires_grad(false);
  at::Tensor lags = at::arange(-(length - 1), length, f64);
  at::Tensor f = at::sigmoid(freqs.to(at::kDouble)) / 2.0;    // (H, D, K)
  at::Tensor lambda2 = at::softplus(gains).pow(2);              // (H, D, K)
  // (H, D, K, lags): the phases in float64, as in code_at
  at::Tensor cosines = at::cos(kTwoPi * f.unsqueeze(-1) * lags + offsets.to(at::kDouble).unsqueeze(-1));
  at::Tensor terms = lambda2.unsqueeze(-1) * cosines.to(freqs.scalar_type());
  const double constant = std::sqrt(static_cast<double>(r) / options.dim()) / (2.0 * options.sines());
  return terms.sum(2) * constant;  // (H, D, 2 length - 1)
}

}  // namespace spe
