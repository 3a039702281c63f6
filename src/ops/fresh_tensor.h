#pragma once
// The fused ops' outputs: fresh contiguous tensors, advised into huge pages where they are large
// (util/huge_pages.h: faulting a fresh 32 MiB tensor in 4 KiB pages can take longer than the
// kernel that fills it).
#include <ATen/ATen.h>

#include "util/huge_pages.h"

namespace spe::ops {

inline at::Tensor fresh_tensor(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

inline at::Tensor fresh_like(const at::Tensor& like) { return fresh_tensor(like.sizes(), like.options()); }

}  // namespace spe::ops
