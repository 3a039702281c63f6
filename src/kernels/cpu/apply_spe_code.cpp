#include "kernels/cpu/apply_spe_code.h"

#include <ATen/Parallel.h>

#include <vector>

#include "kernels/cpu/dispatch.h"

namespace spe::kernels::cpu {
namespace {

template <typename T>
struct Args {
  const CodeShape& s;
  const T *x, *code, *grad_out;
  T *out, *grad_x, *grad_code;
};

// Pair p = n H + h: its batch rows of x start at x + p D (B rows, N H D apart), of out and grad_out
// at p R (N H R apart); its code is the D x R matrix at code + p D R.
struct ForwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const Args<T>& a, int64_t begin, int64_t end) {
    const int64_t D = a.s.dim, R = a.s.realizations, pairs = a.s.length * a.s.heads;
    std::vector<T> scratch;
    for (int64_t p = begin; p < end; ++p)
      small_gemm<Tile>(false, false, a.s.batch, R, D, a.x + p * D, pairs * D, a.code + p * D * R, R, false,
                       a.out + p * R, pairs * R, scratch);
  }
};
struct BackwardPairs {
  template <class Tile, typename T>
  static SPE_INLINE void run(const Args<T>& a, int64_t begin, int64_t end) {
    const int64_t D = a.s.dim, R = a.s.realizations, pairs = a.s.length * a.s.heads;
    std::vector<T> scratch;
    for (int64_t p = begin; p < end; ++p) {
      const T *x = a.x + p * D, *code = a.code + p * D * R, *g = a.grad_out + p * R;
      if (a.grad_x)  // (B x R)(R x D): the code transposed
        small_gemm<Tile>(false, true, a.s.batch, D, R, g, pairs * R, code, R, false, a.grad_x + p * D, pairs * D,
                         scratch);
      if (a.grad_code)  // (D x B)(B x R): x's batch rows transposed
        small_gemm<Tile>(true, false, D, R, a.s.batch, x, pairs * D, g, pairs * R, false, a.grad_code + p * D * R, R,
                         scratch);
    }
  }
};

template <class Kernel, typename T>
void run_pairs(const Args<T>& args) {
  const Isa isa = best_isa();  // (outside the threads: it may throw, on a bad SPE_KERNEL_ISA)
  at::parallel_for(0, args.s.length * args.s.heads, 16,
                   [&](int64_t begin, int64_t end) { run_for_isa<Kernel>(isa, args, begin, end); });
}

}  // namespace

template <typename T>
void apply_spe_code_forward(const CodeShape& s, const T* x, const T* code, T* out) {
  run_pairs<ForwardPairs>(Args<T>{s, x, code, nullptr, out, nullptr, nullptr});
}

template <typename T>
void apply_spe_code_backward(const CodeShape& s, const T* x, const T* code, const T* grad_out, T* grad_x,
                             T* grad_code) {
  run_pairs<BackwardPairs>(Args<T>{s, x, code, grad_out, nullptr, grad_x, grad_code});
}

#define SPE_INSTANTIATE(T)                                                                        \
  template void apply_spe_code_forward<T>(const CodeShape&, const T*, const T*, T*);              \
  template void apply_spe_code_backward<T>(const CodeShape&, const T*, const T*, const T*, T*, T*);
SPE_INSTANTIATE(float)
SPE_INSTANTIATE(double)
#undef SPE_INSTANTIATE

}  // namespace spe::kernels::cpu
