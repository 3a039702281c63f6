#pragma once
// Data-parallel training on LibTorch's c10d with the Gloo backend, started the torchrun way.
//
// Every process (a "rank") holds the whole model and trains on its share of each global batch;
// the gradients are summed across ranks by bucketed all-reduces that start while the backward
// pass is still running. The ranks meet through a TCPStore at MASTER_ADDR:MASTER_PORT, served by
// rank 0, or by the launcher when it says so (torchrun sets TORCHELASTIC_USE_AGENT_STORE=True;
// run_local_workers does the same).
//
// Every collective has a deadline: a peer that died or stopped answering makes the others throw
// DistributedError within the timeout (at once when its connection closes), never hang. Each rank
// leaves its Gloo address, host and pid in the store at setup, so that the error names the rank
// that went ("Rank 2 (host h, pid 4242) is gone"), or the one it stopped because of.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace spe::train {

// Where this process sits in the job: torchrun's environment variables.
struct LaunchEnvironment {
  int64_t rank = 0;        // RANK
  int64_t world_size = 1;  // WORLD_SIZE
  int64_t local_rank = 0;  // LOCAL_RANK
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR
  int64_t master_port = 29500;            // MASTER_PORT
  bool agent_store = false;   // TORCHELASTIC_USE_AGENT_STORE=True: the launcher serves the store
  int64_t restart_count = 0;  // TORCHELASTIC_RESTART_COUNT
  bool local_launcher = false;  // SPE_LOCAL_LAUNCHER=1: started by run_local_workers, which prints its errors
};

// The launch environment from `lookup` (getenv by default); nullopt when WORLD_SIZE is unset.
// A malformed or inconsistent variable (RANK >= WORLD_SIZE, a port outside 1-65535, a missing
// MASTER_PORT) is an error that names it.
using EnvironmentLookup = std::function<const char*(const char*)>;
std::optional<LaunchEnvironment> launch_environment(const EnvironmentLookup& lookup = nullptr);

// Why this process is one of a launcher's workers: "WORLD_SIZE is 4" (any value but 1), or
// "TORCHELASTIC_RUN_ID is set: torchrun started it"; nullopt when it is not.
std::optional<std::string> launched_as_worker(const EnvironmentLookup& lookup = nullptr);

class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A worker of run_local_workers failed and its error is in the launcher's store: the launcher's
// one-line summary quotes it, so the worker exits with status 1 without printing it again.
class ReportedToLauncher : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The ranks of one job, connected: collectives on CPU tensors, in place.
class ProcessGroup {
 public:
  // Meets the other ranks; waits at most timeout_s for them, which is also the deadline of every
  // later collective. A port in use or an unreachable master is a DistributedError. The process
  // ignores SIGPIPE from then on (unless it installed a handler), so that a peer that leaves is an
  // error naming it rather than this rank's death.
  ProcessGroup(const LaunchEnvironment& environment, double timeout_s);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const;
  int64_t world_size() const;

  void broadcast(std::vector<at::Tensor> tensors, int64_t root = 0);
  void all_reduce_sum(at::Tensor tensor);
  // tensor's value on every rank, in rank order (the same shape and dtype everywhere).
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor);

  // Every rank calls this with its own error ("" when it is fine); when any rank has one, every
  // rank throws a DistributedError that quotes each failing rank's message (and each failing rank
  // reports it, as report_failure does).
  void check_all(const std::string& local_error);
  // Leaves this rank's own failure in the store, for the other ranks' error messages and the
  // launcher's summary (best effort: false when the store could not take it).
  bool report_failure(const std::string& message) noexcept;
  // Leaves the error this rank stops with, its own or another's consequence, for the launcher's
  // summary (best effort: false when the store could not take it).
  bool report_error(const std::string& message) noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend class GradientReducer;
};

// Sums the gradients of `parameters` over the ranks. Parameters are grouped into buckets of
// about bucket_bytes, in reverse order (the order backward produces them); a bucket's
// all-reduce starts as soon as its last gradient has been accumulated, so communication
// overlaps the rest of the backward pass. Buckets always start in the same order on every rank.
class GradientReducer {
 public:
  GradientReducer(ProcessGroup& group, std::vector<at::Tensor> parameters, int64_t bucket_bytes = 1 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Call before the last backward pass of a step (earlier micro-batches accumulate locally).
  void arm();
  // Call after it: waits for every bucket (one whose gradients never came is sent as zeros, so
  // every rank issues the same collectives) and writes the sums into the gradients.
  void finish();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

// How one worker of run_local_workers ended.
struct WorkerExit {
  int64_t rank = 0;
  int64_t pid = 0;
  int status = 0;                  // its exit status, or 128 + the signal that ended it
  bool ended_by_launcher = false;  // the launcher sent that signal (it did not stop in time)
  std::string failure;             // the failure it reported as its own ("" when none)
  std::string error;               // the error it stopped with, as it reported it ("" when none)
};

// A job's failure in one line: each worker that failed on its own (it reported a failure, or a
// signal the launcher did not send ended it) with its message or its end, then the ones that
// stopped because of them: "rank 1 (pid 4242) was killed by signal 9 (Killed); ranks 0, 2, 3
// stopped because rank 1 failed". When none failed on its own, each failed worker's end and the
// error it reported. "" when every worker succeeded.
std::string describe_failures(const std::vector<WorkerExit>& exits);

// The local launcher (`spe train --nproc N`): serves the store on a free loopback port, starts
// `argv` N times with torchrun's variables and OMP_NUM_THREADS = OPENBLAS_NUM_THREADS =
// threads_per_worker, and waits. argv[0] is the path of the program to start (it is not searched
// for in PATH).
// After the first failure the others have timeout_s to stop on their own before they are ended.
// A failure is a DistributedError with describe_failures's line. Workers that joined the job leave
// their errors in the store (SPE_LOCAL_LAUNCHER=1 tells them to) and do not print them, so that
// one failure makes one error line; errors before a worker joined are on the shared stderr above.
void run_local_workers(const std::vector<std::string>& argv, int64_t nproc, double timeout_s,
                       int64_t threads_per_worker);

}  // namespace spe::train
