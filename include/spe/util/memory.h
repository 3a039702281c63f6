#pragma once
// The process's resident memory on Linux (/proc/self/status), for reports of peak memory.

namespace spe {

double resident_mib();       // VmRSS
double resident_peak_mib();  // VmHWM: the peak since the start or the last reset
void reset_resident_peak();  // sets the peak to the current resident memory

// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel:
// blocks up to 256 MiB come from the heap (not one mmap each), and up to 1 GiB of free heap is
// kept. A training step allocates and frees the same activations every time; by default each
// large one is a fresh mmap, faulted in page by page and zeroed by the kernel (measured on the
// probe model, one thread: 200 steps in 54 s, two thirds of it in page faults; with this 10 s).
// The cost is resident memory that stays at its peak. Call once, early; `spe` does at start.
void retain_freed_memory();

}  // namespace spe
