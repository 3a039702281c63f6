#pragma once
// The code an SPE module draws for one forward pass: the realizations Qbar and Kbar of two
// Gaussian processes whose cross-covariance is the positional kernel P_d(m - n).
#include <ATen/core/Tensor.h>

namespace spe {

struct SPECode {
  at::Tensor qbar;  // (N, H, D, R): N positions (a 2-D grid is flattened row-major)
  at::Tensor kbar;  // (N, H, D, R)

  int64_t length() const { return qbar.size(0); }
  int64_t heads() const { return qbar.size(1); }
  int64_t dim() const { return qbar.size(2); }
  int64_t realizations() const { return qbar.size(3); }
};

// Checks that a code is well formed: two tensors of the same 4-D shape, dtype and device.
void check_code(const SPECode& code);

// The empirical kernel of a 1-D code: for each lag = m - n in [-(N-1), N-1],
// the average over all position pairs with that lag of sum_r qbar[m, h, d, r] * kbar[n, h, d, r].
// returns: (H, D, 2N - 1), entry [.., .., lag + N - 1].
at::Tensor empirical_kernel(const SPECode& code);

}  // namespace spe
