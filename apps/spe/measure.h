#pragma once
// Measuring for `spe info` and `spe bench`: medians of repeated timings, the process's peak
// memory over a region, and this machine's GEMM rate measured in the same process.
#include <chrono>
#include <functional>
#include <vector>

namespace spe::cli {

// Seconds on the steady clock (for differences only).
inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
  double median_s;
  std::vector<double> all_s;
};

// Runs `work` once to warm up, then `repeats` times; returns the median and every time.
Timing time_median(const std::function<void()>& work, int repeats);

// The same for several works side by side: each warmed up once, then `repeats` rounds that run
// every work once (in reverse order every other round), so that a machine shared with other jobs
// slows them alike and their ratios hold. One Timing per work.
std::vector<Timing> time_medians_interleaved(const std::vector<std::function<void()>>& works, int repeats);

// Peak resident memory of `work` above the resident memory before it, in MiB (Linux VmHWM,
// reset through /proc/self/clear_refs).
double peak_memory_mib(const std::function<void()>& work);

// Median GFLOP/s of an n x n x n float32 matrix product.
double measure_gemm_gflops(int64_t n, int repeats);

}  // namespace spe::cli
