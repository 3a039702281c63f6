#pragma once
// Depthwise cross-correlation along positions, on raw pointers (no LibTorch types): convSPE's
// filter applied to its noise, laid out positions first so that the code comes out as (N, H D, R)
// without a transpose:
//   out[t, c, r] = sum_j w[c, j] x[t + j, c, r],   t in [0, X - S + 1)
// x (X, C, R), w (C, S), out (X - S + 1, C, R), all contiguous. For each channel, a block of a few
// positions is one small matrix product: the block's rows of out = (a banded matrix holding w on
// its diagonals) x (the S + rows - 1 rows of x under it), on the kernels' register-blocked products
// (vector_ops.h), so nearly every multiply-add is useful and runs at their rate.
#include <cstdint>

namespace spe::kernels::cpu {

struct CorrelationShape {
  int64_t extent, channels, realizations, taps;  // X, C, R, S (S <= X)
  int64_t outputs() const { return extent - taps + 1; }
};

template <typename T>
void depthwise_correlation_forward(const CorrelationShape& shape, const T* x, const T* w, T* out);

// grad_w[c, j] = sum_{t, r} grad_out[t, c, r] x[t + j, c, r] (written).
template <typename T>
void depthwise_correlation_weight_grad(const CorrelationShape& shape, const T* x, const T* grad_out, T* grad_w);

}  // namespace spe::kernels::cpu
