#pragma once
// The process's resident memory on Linux (/proc/self/status), for reports of peak memory.

namespace spe {

double resident_mib();       // VmRSS
double resident_peak_mib();  // VmHWM: the peak since the start or the last reset
void reset_resident_peak();  // sets the peak to the current resident memory

// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel:
// blocks up to 2 GiB come from the heap (not one mmap each), and the heap is never trimmed. A
// training step allocates and frees the same activations every time; by default each large one
// is a fresh mmap, faulted in page by page and zeroed by the kernel (measured on the probe model,
// one thread: 200 steps in 54 s, two thirds of it in page faults; with this 10 s). Softmax
// attention's (B, H, N, N) scores are the largest: with blocks above 256 MiB still mmapped and
// the heap trimmed past 1 GiB free, as before 2026-12-05, a step of B 8 x N 2,048 took 60 s, now 3.
// The cost is resident memory that stays at its peak. Call once, early; `spe` does at start.
void retain_freed_memory();

}  // namespace spe
