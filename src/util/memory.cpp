#include "spe/util/memory.h"

#include <malloc.h>

#include <fstream>
#include <limits>
#include <string>

namespace spe {
namespace {

// A field of /proc/self/status in kB, e.g. "VmHWM" or "VmRSS"; 0 where there is none.
double status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1));
  return 0.0;
}

}  // namespace

double resident_mib() { return status_kib("VmRSS") / 1024.0; }

double resident_peak_mib() { return status_kib("VmHWM") / 1024.0; }

void reset_resident_peak() { std::ofstream("/proc/self/clear_refs") << "5"; }

void retain_freed_memory() {
  constexpr int kMiB = 1 << 20;
  mallopt(M_MMAP_THRESHOLD, std::numeric_limits<int>::max());  // also turns off the threshold's own adjustment
  mallopt(M_TRIM_THRESHOLD, -1);                                // never hand the heap's top back
  mallopt(M_TOP_PAD, 64 * kMiB);
}

}  // namespace spe
