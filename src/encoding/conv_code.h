#pragma once
// The conventions a convSPE code is made with, shared by every path that makes one (the whole
// code, ConvCodeStream, the fused decoder's step): which noise rows lie under a position's filters,
// and the filters' common scale.
#include <cmath>
#include <cstdint>

namespace spe::detail {

// The noise positions of the code at position t of a sequence: Z[t + S .. t + 2S - 1].
inline int64_t conv_first_noise_row(int64_t position, int64_t kernel_size) { return position + kernel_size; }

// The last of them, Z[t + 2S - 1]: the one row a code made position by position draws anew at t.
inline int64_t conv_last_noise_row(int64_t position, int64_t kernel_size) {
  return conv_first_noise_row(position, kernel_size) + kernel_size - 1;
}

// The filters' common scale: 1 / (R D)^(1/4), so E[sum_r Qbar Kbar] carries sqrt(R / D).
inline double conv_code_scale(int64_t realizations, int64_t dim) {
  return std::pow(static_cast<double>(realizations * dim), -0.25);
}

}  // namespace spe::detail
