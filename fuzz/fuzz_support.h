#pragma once
// Helpers shared by the fuzz targets: the input as a string, as a file for readers that take a
// path, and a check that stops the fuzzer (as a finding) when an invariant is broken.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace spe::fuzz {

inline std::string as_string(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// `bytes` written to a file of this process in the temporary folder, with the given extension
// (readers choose the format by it); the same path every time.
inline std::string scratch_file(const std::string& bytes, const std::string& extension) {
  const std::string path = "/tmp/spe_fuzz_" + std::to_string(getpid()) + extension;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// A reader accepted input and returned something that breaks its own contract: a finding.
inline void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace spe::fuzz
