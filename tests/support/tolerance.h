#pragma once
// How far a float32 (or float64) result is from its float64 reference, in one number.
#include <ATen/ATen.h>

#include <algorithm>

namespace spe::testing {

// max |got - want| over the larger of 1 and max |want|: absolute near zero, relative beyond.
inline double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() /
         std::max(1.0, want.abs().max().item<double>());
}

}  // namespace spe::testing
