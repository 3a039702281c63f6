#pragma once
// Transparent huge pages for large fresh outputs. Where Linux runs THP in "madvise" mode (Debian's
// default), a fresh 32 MiB tensor is faulted in 8,192 pages of 4 KiB on first write; on the
// virtual machines measured in docs/BENCHMARKS.md that took longer than the fused kernel that
// wrote it. Advised, the same tensor takes 16 faults of 2 MiB. Only the 2 MiB-aligned part of
// the range is advised; errors are ignored (it is advice), and other systems are left alone.
#include <cstddef>
#include <cstdint>
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace spe {

inline void advise_huge_pages(void* data, size_t bytes) {
#ifdef __linux__
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(data);
  const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1), end = (start + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data, (void)bytes;
#endif
}

}  // namespace spe
