#pragma once
// Running the `spe` command line as a user does (SPE_CLI is the built binary's path).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "support/scratch.h"

namespace spe::testing {

struct CliRun {
  int status;
  std::string output;  // stdout and stderr
};

// Runs a shell command line; its stdout and stderr together.
inline CliRun run_command(const std::string& command_line) {
  const std::string command = command_line + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

inline CliRun run_cli(const std::string& arguments) { return run_command(std::string(SPE_CLI) + " " + arguments); }

// A small ListOps (64 / 16 / 16 examples of 20-60 tokens, depth <= 4) made by `spe data listops`
// once per test process, in the scratch folder `name`.
inline std::filesystem::path small_listops(const std::string& name, int seed) {
  const std::filesystem::path dir = scratch(name);
  if (!std::filesystem::exists(dir / "test.bin")) {
    const CliRun run = run_cli("data listops --out " + dir.string() + " --train 64 --valid 16 --test 16" +
                               " --min-length 20 --max-length 60 --max-depth 4 --seed " + std::to_string(seed));
    EXPECT_EQ(run.status, 0) << run.output;
  }
  return dir;
}

}  // namespace spe::testing
