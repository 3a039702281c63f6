#pragma once
// Integers read from JSON written by spe (dataset headers, checkpoints). nlohmann-json converts a
// number such as 4e45 or 1.5 to an integer without a check (undefined behaviour out of range), so
// anything but an integer within int64's range is refused here.
#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace spe {

// what: how the error names the value ("dataset 'x': the header's vocab_size").
inline int64_t json_integer(const nlohmann::json& value, const std::string& what) {
  const bool in_range = value.is_number_integer() &&
                        (!value.is_number_unsigned() ||
                         value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (!in_range) throw std::runtime_error(fmt::format("{} is {}, expected an integer", what, value.dump()));
  return value.get<int64_t>();
}

}  // namespace spe
