#pragma once
// The SPE code of one sequence, drawn once and read position by position while decoding:
//   sineSPE keeps the code as its factors for every position (SineCodeFactors): position t is
//           row t of the same code; each token's oscillators [Omega(t); 1] are computed once
//           here for every layer, and the one-position filter (ops::sine_spe_filter_position)
//           reads them with the rows each layer made once: no code is materialised per token;
//   convSPE slides its filters over noise keyed by position (ConvCodeStream): each position
//           gets a (1, H, D, R) code of its own.
// The draws are those of the module's forward for a whole sequence from the same generator, so a
// decoded sequence and a whole forward see the same code.
#include <memory>
#include <utility>

#include "spe/encoding/conv_spe.h"
#include "spe/encoding/sine_spe.h"
#include "spe/random.h"

namespace spe {

// The code that holds one position, and the row of that position in it.
struct PositionCode {
  PositionCode() = default;
  PositionCode(const SPECode* code_, int64_t row_, at::Tensor coefficients_ = {}, at::Tensor rows_ = {})
      : code(code_), row(row_), coefficients(std::move(coefficients_)), rows(std::move(rows_)) {}
  const SPECode* code = nullptr;
  int64_t row = 0;
  // Decoding a sine code: the position's [Omega(n); 1] for the queries' and the keys' codes,
  // (2, H, D, 2K + 1) (sine_step_coefficients), computed once per token for every layer that reads
  // the code; and, once gated by a layer, that layer's rows (H, D, 2K + 1, R) (sine_step_rows).
  // Undefined otherwise.
  at::Tensor coefficients, rows;
};

class SPECodeStream {
 public:
  // Draws what SineSPEImpl::forward draws (the noise) from `generator`.
  SPECodeStream(const SineSPEImpl& sine, int64_t realizations, OptionalGenerator generator = c10::nullopt);
  // Draws what ConvSPEImpl::forward draws (the noise key) from `generator`; 1-D convSPE only.
  SPECodeStream(const ConvSPEImpl& conv, int64_t realizations, OptionalGenerator generator = c10::nullopt);

  // The code of positions t = 0, 1, 2, ... in turn (each called once, in order). Valid until the
  // next call.
  PositionCode next();
  int64_t position() const { return position_; }
  // sineSPE: the drawn code's factors, for every position (null for convSPE).
  const SineCodeFactors* sine_factors() const { return code_.sine ? &*code_.sine : nullptr; }
  // convSPE: the stream of its code (null for sineSPE).
  const ConvCodeStream* conv_stream() const { return conv_.get(); }

 private:
  SPECode code_;  // sineSPE: the factors for all positions; convSPE: the last position's code
  at::Tensor coefficients_;  // sineSPE: the last position's (2, H, D, 2K + 1)
  std::unique_ptr<ConvCodeStream> conv_;
  int64_t position_ = 0;
};

// How many positions a decoding sineSPE code covers: positions are exact in float64 far beyond.
inline constexpr int64_t kDecodingCodeLength = int64_t{1} << 40;

}  // namespace spe
