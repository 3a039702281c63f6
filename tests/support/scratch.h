#pragma once
// Files and folders for a test, under a folder of its own process (ctest runs tests in parallel).
#include <unistd.h>

#include <filesystem>
#include <string>

namespace spe::testing {

// A path inside this test process's scratch folder (the folder exists; the path may not).
inline std::filesystem::path scratch(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("spe_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

// An empty folder inside the scratch folder, emptied if it was there.
inline std::filesystem::path fresh_folder(const std::string& name) {
  const std::filesystem::path dir = scratch(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace spe::testing
