#pragma once
// One entry per kernel that runs it compiled for the instruction set chosen at run time (isa.h):
// a function per set, each with its target attribute, into which the always-inlined kernel body
// is compiled with that set's register blocking (vector_ops.h: Avx512Tile, Avx2Tile,
// BaselineTile). A kernel is a struct with
//   template <class Tile, class... Args> static SPE_INLINE void run(Args...);
#include <utility>

#include "isa.h"
#include "vector_ops.h"

namespace spe::kernels::cpu {

#ifdef SPE_X86_DISPATCH
template <class Kernel, class... Args>
SPE_TARGET_AVX512 void run_avx512(Args&&... args) {
  Kernel::template run<Avx512Tile>(std::forward<Args>(args)...);
}
template <class Kernel, class... Args>
SPE_TARGET_AVX2 void run_avx2(Args&&... args) {
  Kernel::template run<Avx2Tile>(std::forward<Args>(args)...);
}
#endif

// Kernel::run<the tile of isa>(args...).
template <class Kernel, class... Args>
void run_for_isa([[maybe_unused]] Isa isa, Args&&... args) {
#ifdef SPE_X86_DISPATCH
  if (isa == Isa::avx512) return run_avx512<Kernel>(std::forward<Args>(args)...);
  if (isa == Isa::avx2) return run_avx2<Kernel>(std::forward<Args>(args)...);
#endif
  Kernel::template run<BaselineTile>(std::forward<Args>(args)...);
}

}  // namespace spe::kernels::cpu
