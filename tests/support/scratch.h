#pragma once
// Files and folders for a test, under a folder of its own process (ctest runs tests in parallel),
// removed with everything in it when the process exits.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace spe::testing {

namespace detail {
struct ScratchFolder {
  const pid_t owner = ::getpid();
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("spe_test_" + std::to_string(owner));
  ~ScratchFolder() {
    if (::getpid() != owner) return;  // a forked child exiting leaves its parent's folder alone
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};
}  // namespace detail

// A path inside this test process's scratch folder (the folder exists; the path may not).
inline std::filesystem::path scratch(const std::string& name) {
  static const detail::ScratchFolder folder;
  std::filesystem::create_directories(folder.path);
  return folder.path / name;
}

// An empty folder inside the scratch folder, emptied if it was there.
inline std::filesystem::path fresh_folder(const std::string& name) {
  const std::filesystem::path dir = scratch(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace spe::testing
