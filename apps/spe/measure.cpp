#include "measure.h"

#include <ATen/ATen.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "spe/util/memory.h"

namespace spe::cli {

std::vector<Timing> time_medians_interleaved(const std::vector<std::function<void()>>& works, int repeats) {
  for (const auto& work : works) work();
  std::vector<Timing> timings(works.size(), Timing{0.0, {}});
  for (int r = 0; r < repeats; ++r)
    for (size_t j = 0; j < works.size(); ++j) {
      const size_t i = r % 2 == 0 ? j : works.size() - 1 - j;
      const auto start = std::chrono::steady_clock::now();
      works[i]();
      timings[i].all_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  for (Timing& t : timings) {
    std::vector<double> sorted = t.all_s;
    std::sort(sorted.begin(), sorted.end());
    t.median_s = sorted[sorted.size() / 2];
  }
  return timings;
}

Timing time_median(const std::function<void()>& work, int repeats) {
  return time_medians_interleaved({work}, repeats).front();
}

double peak_memory_mib(const std::function<void()>& work) {
  // A fixed mmap threshold makes glibc return every large block to the system when it is freed,
  // so resident memory follows live memory; then trim what earlier work left cached.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  malloc_trim(0);
  reset_resident_peak();
  const double before = resident_mib();
  work();
  return std::max(0.0, resident_peak_mib() - before);
}

double measure_gemm_gflops(int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n}), c = at::empty({n, n});
  const Timing t = time_median([&] { at::mm_out(c, a, b); }, repeats);
  return 2.0 * n * n * n / t.median_s / 1e9;
}

}  // namespace spe::cli
