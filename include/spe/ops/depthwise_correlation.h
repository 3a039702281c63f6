#pragma once
// Depthwise cross-correlation along positions, positions first: convSPE's filters applied to its
// noise (encoding/conv_spe.h), fused on CPU, with its own backward.
#include <ATen/core/Tensor.h>

namespace spe::ops {

// Sequences: x (X, C, R), filters (C, S) with 1 <= S <= X -> (X - S + 1, C, R):
//   out[t, c, r] = sum_j filters[c, j] x[t + j, c, r]
// Grids (images): x (X1, X2, C, R), filters (C, S1, S2) -> (X1 - S1 + 1, X2 - S2 + 1, C, R):
//   out[t1, t2, c, r] = sum_{a, j} filters[c, a, j] x[t1 + a, t2 + j, c, r]
// CPU, one dtype, float32 or float64. No padding, no flip: the cross-correlation of at::conv1d or
// conv2d with groups = C, whose layout is (R, C, X...). Each channel's R columns share its filter.
// Differentiable with respect to both inputs (the gradient of x is the correlation of the padded
// gradient with the flipped filters).
at::Tensor depthwise_correlation(const at::Tensor& x, const at::Tensor& filters);

}  // namespace spe::ops
