#pragma once
// Intra-op threads for everything spe computes with.

namespace spe {

// Sets LibTorch's intra-op threads (at::set_num_threads, which also sizes spe's kernels) and the
// thread pool of OpenBLAS, which at::set_num_threads does not touch: OpenBLAS sizes its pool at
// load time (OPENBLAS_NUM_THREADS, else every core) and its idle threads spin in sched_yield, so a
// pool wider than the threads asked for competes with them for the cores (measured: a one-thread
// training run spent two thirds of its time in the kernel, yielding). threads >= 1.
void set_num_threads(int threads);

// OpenBLAS's pool size, or 0 when the process has no OpenBLAS.
int blas_num_threads();

}  // namespace spe
