#pragma once
// Depthwise cross-correlation along positions, on raw pointers (no LibTorch types): convSPE's
// filter applied to its noise, laid out positions first so that the code comes out as (N, H D, R)
// without a transpose. Over a grid of X1 rows of X2 positions (a sequence: X1 = S1 = 1):
//   out[t1, t2, c, r] = sum_{a, j} w[c, a, j] x[t1 + a, t2 + j, c, r]
// x (X1, X2, C, R), w (C, S1, S2), out (X1 - S1 + 1, X2 - S2 + 1, C, R), all contiguous. For each
// channel, output row and filter row a, a block of a few positions is one small matrix product:
// the block's outputs += (a banded matrix holding w[c, a] on its diagonals) x (the S2 + rows - 1
// positions of input row t1 + a under it), on the kernels' register-blocked products
// (vector_ops.h), so nearly every multiply-add is useful and runs at their rate.
#include <cstdint>

namespace spe::kernels::cpu {

struct CorrelationShape {
  int64_t rows, extent, channels, realizations;  // X1, X2, C, R
  int64_t row_taps, taps;                         // S1 <= X1, S2 <= X2
  int64_t output_rows() const { return rows - row_taps + 1; }
  int64_t outputs() const { return extent - taps + 1; }  // per output row
};

template <typename T>
void depthwise_correlation_forward(const CorrelationShape& shape, const T* x, const T* w, T* out);

// grad_w[c, a, j] = sum_{t1, t2, r} grad_out[t1, t2, c, r] x[t1 + a, t2 + j, c, r] (written).
template <typename T>
void depthwise_correlation_weight_grad(const CorrelationShape& shape, const T* x, const T* grad_out, T* grad_w);

}  // namespace spe::kernels::cpu
