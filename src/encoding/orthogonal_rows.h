#pragma once
// SPENoise::orthogonal's draw, shared by sineSPE's weights and the gate's noise.
#include <ATen/ATen.h>

#include <cmath>

#include "spe/random.h"

namespace spe::detail {

// (H, rows, R): each head's rows in blocks of whole groups of `group` rows (as many groups as fit
// in R; R rows when one group does not), each block rows of a Haar-random R x R orthogonal matrix
// (QR of a Gaussian one, signs fixed by R's diagonal), scaled to norm sqrt(R); blocks independent.
inline at::Tensor orthogonal_rows(int64_t heads, int64_t rows, int64_t group, int64_t realizations,
                                  OptionalGenerator generator, const at::TensorOptions& options) {
  const int64_t block = realizations >= group ? (realizations / group) * group : realizations;
  const int64_t blocks = (rows + block - 1) / block;
  const at::Tensor gaussian = at::randn({heads, blocks, realizations, realizations}, generator, options);
  auto [q, r] = at::linalg_qr(gaussian.to(at::kDouble));                          // (H, blocks, R, R) each
  const at::Tensor haar = q * at::sign(at::diagonal(r, 0, -2, -1)).unsqueeze(-2);  // columns orthonormal
  const at::Tensor picked = haar.transpose(-1, -2).narrow(2, 0, block).flatten(1, 2).narrow(1, 0, rows);
  return (picked * std::sqrt(static_cast<double>(realizations))).to(options.dtype());
}

}  // namespace spe::detail
