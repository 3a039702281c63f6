#pragma once
// Argument checks shared by the encodings: every message names the value and what was expected.
#include <c10/util/Exception.h>

#include <cstdint>

namespace spe::detail {

inline void check_positive(const char* where, const char* what, int64_t value) {
  TORCH_CHECK(value > 0, where, ": ", what, " must be positive, got ", value);
}

}  // namespace spe::detail
