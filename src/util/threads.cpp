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
  at::set_num_threads(threads);
  if (auto set = openblas_function<void (*)(int)>("openblas_set_num_threads")) set(threads);
}

int threads_for_step(double step_flops, int cores) {
  const double threads = std::floor(step_flops / kStepFlopsPerThread);
  return static_cast<int>(std::clamp(threads, 1.0, static_cast<double>(std::max(cores, 1))));
}

double step_flops(int64_t parameters, double tokens, bool backward) {
  return (backward ? 6.0 : 2.0) * static_cast<double>(parameters) * tokens;
}

namespace {
int automatic_cores = 0;  // 0: the user chose the thread count
}  // namespace

void set_automatic_threads(int cores) { automatic_cores = cores; }

int choose_step_threads(double step_flops) {
  if (automatic_cores == 0) return at::get_num_threads();
  const int threads = threads_for_step(step_flops, automatic_cores);
  set_num_threads(threads);
  return threads;
}

int blas_num_threads() {
  auto get = openblas_function<int (*)()>("openblas_get_num_threads");
  return get ? get() : 0;
}

}  // namespace spe
