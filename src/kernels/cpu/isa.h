#pragma once
// Run-time choice of instruction set for the CPU kernels. Their hot loops (written with the
// vector types of vector_ops.h, always inlined) are compiled into one function per instruction
// set, marked with SPE_TARGET_AVX512 / SPE_TARGET_AVX2, and best_isa() picks the best this CPU
// runs, by its features rather than its model name (which would miss AMD processors).
// SPE_KERNEL_ISA=avx2 or baseline in the environment caps the choice (the tests run every
// variant on one machine that way); it never picks more than the CPU runs.
#include <cstdlib>
#include <stdexcept>
#include <string>

#if defined(__GNUC__) && defined(__x86_64__)
#define SPE_X86_DISPATCH 1
#define SPE_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define SPE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace spe::kernels::cpu {

enum class Isa { baseline, avx2, avx512 };

// The SPE_KERNEL_ISA cap: avx512 (the default: no cap), avx2 or baseline.
inline Isa isa_cap() {
  const char* value = std::getenv("SPE_KERNEL_ISA");
  if (value == nullptr || *value == '\0' || std::string(value) == "avx512") return Isa::avx512;
  if (std::string(value) == "avx2") return Isa::avx2;
  if (std::string(value) == "baseline") return Isa::baseline;
  throw std::invalid_argument("SPE_KERNEL_ISA=" + std::string(value) + ": expected avx512, avx2 or baseline");
}

inline Isa best_isa() {
  static const Isa isa = [] {
    Isa detected = Isa::baseline;
#ifdef SPE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
      detected = Isa::avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      detected = Isa::avx2;
#endif
    const Isa cap = isa_cap();
    return cap < detected ? cap : detected;
  }();
  return isa;
}

}  // namespace spe::kernels::cpu
