#pragma once
// The code an SPE module draws for one forward pass: the realizations Qbar and Kbar of two
// Gaussian processes whose cross-covariance is the positional kernel P_d(m - n). A sinusoidal
// code is kept as its factors, so that the fused filter never materialises it.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <utility>

#include "spe/ops/sine_spe_filter.h"
#include "spe/util/choices.h"

namespace spe {

// How the random weights of sampled SPE are drawn (sineSPE's Z, 2K x R per head and feature, and
// the gate's noise, 1 x R per head and feature):
//   gaussian:   i.i.d. N(0, 1), the paper's; a product of two codes has a relative sd of order 1/sqrt(R);
//   orthogonal: a head's rows, in blocks of whole features (as many as fit in R, or R rows when one
//               does not), orthogonal within a block, each of norm sqrt(R), uniformly oriented
//               (blocks independent), as FAVOR+'s orthogonal random features. Still unbiased; each
//               feature's own products are exact in every draw once its rows fit in R (sineSPE:
//               R >= 2K; the gate: R >= 1), and all of a head's once R holds all its rows.
//               A gated sineSPE code draws its gate's row with its 2K (SineSPEOptions::gate_noise):
//               then the gate's noise is orthogonal to the code too, and the whole gated code's
//               products are exact in every draw once R >= (2K + 1) D.
enum class SPENoise { gaussian, orthogonal };
inline constexpr Choice<SPENoise> kSPENoises[] = {{"gaussian", SPENoise::gaussian}, {"orthogonal", SPENoise::orthogonal}};

struct SPECode {
  SPECode() = default;
  SPECode(at::Tensor qbar_, at::Tensor kbar_) : qbar(std::move(qbar_)), kbar(std::move(kbar_)) {}
  static SPECode factored(SineCodeFactors factors) {
    SPECode code;
    code.sine = std::move(factors);
    return code;
  }

  at::Tensor qbar;  // (N, H, D, R): N positions (a 2-D grid is flattened row-major); undefined
  at::Tensor kbar;  // (N, H, D, R)  when the code is held as sine factors
  c10::optional<SineCodeFactors> sine;
  // (H, D, R) or undefined: a gate's noise drawn with the code (SineSPEOptions::gate_noise), rows of
  // norm about sqrt(R) before the gate's scaling; a gate uses it instead of drawing its own.
  at::Tensor gate_noise;

  bool materialised() const { return qbar.defined(); }
  int64_t length() const { return materialised() ? qbar.size(0) : sine->length; }
  int64_t heads() const { return materialised() ? qbar.size(1) : sine->weights.size(0); }
  int64_t dim() const { return materialised() ? qbar.size(2) : sine->weights.size(1); }
  int64_t realizations() const { return materialised() ? qbar.size(3) : sine->weights.size(3); }
  at::ScalarType scalar_type() const { return materialised() ? qbar.scalar_type() : sine->weights.scalar_type(); }

  // The same code with qbar and kbar computed (a copy of the tensors' handles when already so).
  SPECode materialise() const;
};

// Checks that a code is well formed: two tensors of the same 4-D shape, dtype and device, or
// consistent sine factors.
void check_code(const SPECode& code);

// Qbar and Kbar of a factored sine code at the given positions (N,): each (N, H, D, R).
std::pair<at::Tensor, at::Tensor> sine_code_at(const SineCodeFactors& factors, const at::Tensor& positions);

// The parts of a factored sine code that the one-position filter (ops::sine_spe_filter_position)
// reads while decoding:
//   rows: (H, D, 2K + 1, R), for each head and feature [a_d W_d; c_d] (a = 1, c = 0 when absent),
//         made once per sequence and gate;
//   coefficients of position n: (2, H, D, 2K + 1), [Omega(n); 1] of the queries' code (offsets)
//         then of the keys', phases in float64, in the weights' dtype; made once per position.
at::Tensor sine_step_rows(const SineCodeFactors& factors);
at::Tensor sine_step_coefficients(const SineCodeFactors& factors, int64_t position);

// The empirical kernel of a 1-D code: for each lag = m - n in [-(N-1), N-1],
// the average over all position pairs with that lag of sum_r qbar[m, h, d, r] * kbar[n, h, d, r].
// returns: (H, D, 2N - 1), entry [.., .., lag + N - 1].
at::Tensor empirical_kernel(const SPECode& code);

}  // namespace spe
