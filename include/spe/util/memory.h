#pragma once
// The process's resident memory on Linux (/proc/self/status), for reports of peak memory.

namespace spe {

double resident_mib();       // VmRSS
double resident_peak_mib();  // VmHWM: the peak since the start or the last reset
void reset_resident_peak();  // sets the peak to the current resident memory

}  // namespace spe
