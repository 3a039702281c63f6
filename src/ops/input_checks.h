#pragma once
// The checks every fused op makes of its tensor inputs, and whether the fused kernels take a tensor.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>

namespace spe::ops {

// The fused CPU kernels take tensors on CPU in float32 or float64 (other devices and dtypes go
// through ATen's operations).
inline bool fused_kernel_takes(const at::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
}

// Every input on CPU and of the first one's dtype, float32 or float64.
inline void check_cpu_floating(const char* where, std::initializer_list<const at::Tensor*> inputs) {
  const at::Tensor& first = **inputs.begin();
  for (const at::Tensor* t : inputs) {
    TORCH_CHECK(t->device().is_cpu(), where, ": the fused kernel runs on CPU, got ", t->device());
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), where, ": inputs must share a dtype, got ",
                first.scalar_type(), " and ", t->scalar_type());
  }
  TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble, where,
              ": float32 or float64 expected, got ", first.scalar_type());
}

}  // namespace spe::ops
