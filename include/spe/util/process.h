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

// The status run_program reports for a status from waitpid: the exit status, or 128 + the signal.
int exit_status_of(int wait_status);

// "exited with status 3", "was not found or not executable", "was killed by signal 9 (Killed)".
std::string describe_exit(int status);

}  // namespace spe
