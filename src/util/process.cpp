#include "spe/util/process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace spe {

int run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) throw std::invalid_argument("run_program: no program given");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const char* sink = log_path.empty() ? "/dev/null" : log_path.c_str();
  const int flags = O_WRONLY | O_CREAT | (log_path.empty() ? 0 : O_APPEND);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, sink, flags, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return 127;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  return exit_status_of(status);
}

int exit_status_of(int wait_status) {
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 127;
}

std::string describe_exit(int status) {
  if (status == 127) return "was not found or not executable";
  if (status > 128) return "was killed by signal " + std::to_string(status - 128) + " (" + strsignal(status - 128) + ")";
  return "exited with status " + std::to_string(status);
}

}  // namespace spe
