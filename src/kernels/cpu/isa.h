#pragma once
// Run-time choice of instruction set for the CPU kernels. Their hot loops (written with the
// vector types of vector_ops.h, always inlined) are compiled into one function per instruction
// set, marked with SPE_TARGET_AVX512 / SPE_TARGET_AVX2, and best_isa() picks the best this CPU
// runs, by its features rather than its model name (which would miss AMD processors).
#if defined(__GNUC__) && defined(__x86_64__)
#define SPE_X86_DISPATCH 1
#define SPE_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define SPE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace spe::kernels::cpu {

enum class Isa { baseline, avx2, avx512 };

inline Isa best_isa() {
#ifdef SPE_X86_DISPATCH
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    return Isa::baseline;
  }();
  return isa;
#else
  return Isa::baseline;
#endif
}

}  // namespace spe::kernels::cpu
