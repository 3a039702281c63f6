#include "spe/encoding/code_stream.h"

#include <c10/util/Exception.h>

namespace spe {

SPECodeStream::SPECodeStream(const SineSPEImpl& sine, int64_t realizations, OptionalGenerator generator)
    : code_(sine.code(sine.sample_noise(realizations, generator), kDecodingCodeLength)) {}

SPECodeStream::SPECodeStream(const ConvSPEImpl& conv, int64_t realizations, OptionalGenerator generator)
    : conv_(std::make_unique<ConvCodeStream>(conv, draw_key(generator), realizations)) {}

PositionCode SPECodeStream::next() {
  TORCH_CHECK(position_ < kDecodingCodeLength, "SPECodeStream: decoded past position ", kDecodingCodeLength);
  const int64_t t = position_++;
  if (!conv_) {
    coefficients_ = sine_step_coefficients(*code_.sine, t);
    return {&code_, t, coefficients_};
  }
  code_ = conv_->next();
  return {&code_, 0};
}

}  // namespace spe
