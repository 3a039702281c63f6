#pragma once
#include <cstdint>
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

// The thread rule of training (docs/BENCHMARKS.md, "Threads"): one intra-op thread per
// kStepFlopsPerThread of work in a step, at least 1 and at most `cores`, where a step's work is
// about 6 x parameters x tokens (forward and backward). Small models lose to their threads'
// fork and join: on 2 cores of an AMD EPYC, 2 threads were 0.1-0.9x of one below 50 GFLOP per
// step and 1.15-1.35x at 84.
constexpr double kStepFlopsPerThread = 40e9;
int threads_for_step(double step_flops, int cores);

// The rule's measure of a step's work: 2 x parameters x tokens for a forward pass, 6 x with its
// backward.
double step_flops(int64_t parameters, double tokens, bool backward);

// Whether the thread count is spe's to choose (the command line was given no --threads and no
// OMP_NUM_THREADS): then choose_step_threads applies the rule with up to `cores` threads.
void set_automatic_threads(int cores);

// When the choice is spe's: sets threads_for_step(step_flops, cores) and returns it; otherwise
// leaves the thread count as it is and returns it.
int choose_step_threads(double step_flops);

}  // namespace spe
