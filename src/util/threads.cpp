#include "spe/util/threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace spe {
namespace {

// OpenBLAS's own entry points, looked up at run time: spe does not link OpenBLAS itself (LibTorch
// does, when it was built with it), so a process without it has nothing to set.
template <typename Function>
Function openblas_function(const char* name) {
  return reinterpret_cast<Function>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

void set_num_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("set_num_threads: threads is " + std::to_string(threads) + ", expected >= 1");
  set_threads({threads, threads});
}

void set_threads(ThreadChoice choice) {
  if (choice.intra_op < 1 || choice.blas < 1)
    throw std::invalid_argument("set_threads: intra-op " + std::to_string(choice.intra_op) + " and BLAS " +
                                std::to_string(choice.blas) + " threads, expected >= 1 each");
  at::set_num_threads(choice.intra_op);
  if (auto set = openblas_function<void (*)(int)>("openblas_set_num_threads")) set(choice.blas);
}

namespace {
int clamp_threads(double threads, int cores) {
  return static_cast<int>(std::clamp(std::floor(threads), 1.0, static_cast<double>(std::max(cores, 1))));
}
}  // namespace

ThreadChoice threads_for_step(double step_flops, int cores, bool small_products) {
  if (small_products) {
    const int threads = clamp_threads(step_flops / kStepFlopsPerThread, cores);
    return {threads, threads};
  }
  return {clamp_threads(step_flops / kStepFlopsPerIntraOpThread, cores), std::max(cores, 1)};
}

ThreadChoice threads_for_decoding(double weight_bytes, int cores) {
  return {1, clamp_threads(weight_bytes / kDecodingWeightBytesPerBlasThread, cores)};
}

double step_flops(int64_t parameters, double tokens, bool backward) {
  return (backward ? 6.0 : 2.0) * static_cast<double>(parameters) * tokens;
}

namespace {
int automatic_cores = 0;  // 0: the user chose the thread count

ThreadChoice apply_if_automatic(ThreadChoice rule) {
  if (automatic_cores == 0) return {at::get_num_threads(), std::max(blas_num_threads(), 1)};
  set_threads(rule);
  return rule;
}
}  // namespace

void set_automatic_threads(int cores) { automatic_cores = cores; }

ThreadChoice choose_step_threads(double step_flops, bool small_products) {
  return apply_if_automatic(threads_for_step(step_flops, automatic_cores, small_products));
}

ThreadChoice choose_decoding_threads(double weight_bytes) {
  return apply_if_automatic(threads_for_decoding(weight_bytes, automatic_cores));
}

int blas_num_threads() {
  auto get = openblas_function<int (*)()>("openblas_get_num_threads");
  return get ? get() : 0;
}

}  // namespace spe
