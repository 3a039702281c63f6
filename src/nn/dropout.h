#pragma once
// Dropout whose mask is drawn 16 bits per entry: four entries from each 64-bit word of LibTorch's
// default CPU generator (the stream at::dropout draws from, under the same lock), where
// at::dropout's bernoulli_ draws a word per entry (6-9 % of a training step here; Debian's
// LibTorch has no MKL stream for it: docs/BENCHMARKS.md). An entry is
// dropped when its 16 bits fall below round(p 2^16), so the rate is p to within 2^-17, and kept
// entries are scaled by 1 / (1 - that rate): the expectation of every entry is unchanged.
// Tensors off the CPU, or of other dtypes, go to at::dropout.
#include <ATen/core/Tensor.h>

namespace spe::nn {

// x with each entry zeroed with probability p and the others scaled by 1 / (1 - p) when
// training; x itself otherwise (or when p is 0). p in [0, 1). Differentiable in x (the mask is
// a constant of the product).
at::Tensor apply_dropout(const at::Tensor& x, double p, bool training);

// The rate apply_dropout applies for p: round(p 2^16) / 2^16.
double dropout_rate(double p);

}  // namespace spe::nn
