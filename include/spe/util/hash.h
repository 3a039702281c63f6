#pragma once
// FNV-1a, 64 bits: a stable hash for file checksums and for deriving seeds from names (unlike
// std::hash, the same on every platform and build).
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

namespace spe {

inline uint64_t fnv1a(const char* data, size_t size, uint64_t hash = 1469598103934665603ull) {
  for (size_t i = 0; i < size; ++i) {
    hash ^= static_cast<unsigned char>(data[i]);
    hash *= 1099511628211ull;
  }
  return hash;
}

inline uint64_t fnv1a(const std::string& text) { return fnv1a(text.data(), text.size()); }

// A random engine for one named stream of a seed ("train", "pairs/valid", ...): streams of the
// same seed are independent, and each is the same on every run.
inline std::mt19937_64 seeded_engine(uint64_t seed, const std::string& stream) {
  const uint64_t h = fnv1a(stream);
  std::seed_seq seeds{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(h),
                      static_cast<uint32_t>(h >> 32)};
  return std::mt19937_64(seeds);
}

}  // namespace spe
