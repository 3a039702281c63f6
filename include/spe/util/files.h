#pragma once
// Files that users keep: written whole or not at all, read with errors that name the path.
#include <string>

namespace spe {

// Writes `contents` to a temporary file beside `path`, flushes it to disk and renames it over
// `path`, then flushes the folder: a crash leaves either the old file or the new one, never a
// mixture. Throws std::runtime_error naming the path and the reason.
void write_file_atomically(const std::string& path, const std::string& contents);

// The whole file; throws std::runtime_error naming the path when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace spe
