#pragma once
// Writing user-visible files so that a crash never leaves a half-written one behind.
#include <string>

namespace spe {

// Writes `contents` to a temporary file beside `path`, flushes it to disk, then renames it over
// `path`. Throws std::runtime_error naming the path and the system error on failure.
void write_file_atomically(const std::string& path, const std::string& contents);

}  // namespace spe
