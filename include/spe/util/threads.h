#pragma once
#include <cstdint>
// Threads for everything spe computes with: LibTorch's intra-op pool and OpenBLAS's.

namespace spe {

// Sets LibTorch's intra-op threads (at::set_num_threads, which also sizes spe's kernels) and the
// thread pool of OpenBLAS, which at::set_num_threads does not touch: OpenBLAS sizes its pool at
// load time (OPENBLAS_NUM_THREADS, else every core) and its idle threads spin in sched_yield, so a
// pool wider than the threads asked for competes with them for the cores (measured: a one-thread
// training run spent two thirds of its time in the kernel, yielding). threads >= 1.
void set_num_threads(int threads);

// OpenBLAS's pool size, or 0 when the process has no OpenBLAS.
int blas_num_threads();

// LibTorch's intra-op threads (its element-wise operations and spe's kernels) and OpenBLAS's
// threads (the matrix products), chosen apart.
struct ThreadChoice {
  int intra_op = 1;
  int blas = 1;
};
// Sets each pool to its own size (both >= 1).
void set_threads(ThreadChoice choice);

// The thread rule of training and of forward passes over many positions (docs/BENCHMARKS.md,
// "Threads"), from a step's work (about 6 x parameters x tokens with the backward), at least 1
// and at most `cores` threads each:
// - linear attention (and no attention): every core to OpenBLAS, and one intra-op thread per
//   kStepFlopsPerIntraOpThread. On 2 cores of an AMD EPYC, 1 intra-op thread with 2 BLAS
//   threads trained every such model measured 1.0-1.5x faster than 1 and 1; 2 intra-op threads
//   with them were slower up to 84 GFLOP per step (their OpenMP workers spin for the cores
//   OpenBLAS's need) and level at 336.
// - softmax attention (`small_products`: its scores are B x H small products per operation,
//   which lost 10-30 % with 2 BLAS threads): both pools alike, one thread per
//   kStepFlopsPerThread (the first rule, unchanged).
constexpr double kStepFlopsPerIntraOpThread = 300e9;
constexpr double kStepFlopsPerThread = 40e9;
ThreadChoice threads_for_step(double step_flops, int cores, bool small_products = false);

// The thread rule of token-by-token decoding: one intra-op thread (a step is many small
// operations), and one BLAS thread per kDecodingWeightBytesPerBlasThread of the weights a step
// reads, at least 1 and at most `cores`: a second core's memory bandwidth helps only products
// over weights larger than the caches (measured: 1 MB 0.65-0.7x, 19 MB 1.06-1.2x, 300 MB
// 1.4-1.5x against one BLAS thread).
constexpr double kDecodingWeightBytesPerBlasThread = 8.0 * (1 << 20);
ThreadChoice threads_for_decoding(double weight_bytes, int cores);

// The rules' measure of a step's work: 2 x parameters x tokens for a forward pass, 6 x with its
// backward.
double step_flops(int64_t parameters, double tokens, bool backward);

// Whether the thread count is spe's to choose (the command line was given no --threads and no
// OMP_NUM_THREADS): then the choose_ functions apply their rule with up to `cores` threads.
void set_automatic_threads(int cores);

// When the choice is spe's: sets the rule's threads and returns them; otherwise leaves the
// threads as they are (both pools the user's count) and returns them.
ThreadChoice choose_step_threads(double step_flops, bool small_products = false);
ThreadChoice choose_decoding_threads(double weight_bytes);

}  // namespace spe
