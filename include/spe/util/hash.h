#pragma once
// FNV-1a, 64 bits: a stable hash for file checksums and for deriving seeds from names (unlike
// std::hash, the same on every platform and build).
#include <cstddef>
#include <cstdint>
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

}  // namespace spe
