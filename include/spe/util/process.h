#pragma once
// Running another program (mma, fluidsynth) without a shell: arguments are passed as they are,
// so file names with spaces or quotes are safe.
#include <string>
#include <vector>

namespace spe {

// Runs argv[0] (searched in PATH) with the arguments, its output discarded (or appended to
// log_path when given), and waits. Returns its exit status, 127 when it could not be started,
// or 128 + the signal number when a signal ended it.
int run_program(const std::vector<std::string>& argv, const std::string& log_path = "");

// "exit status 3", "not found or not executable", "killed by signal 9".
std::string describe_exit(int status);

}  // namespace spe
