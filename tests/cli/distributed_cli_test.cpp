// Data-parallel `spe train` as a user runs it: two local processes (`--nproc 2`, and torchrun)
// against one process over the same global batch, a resume with another world size, a worker
// killed in the middle of training and one that fails on its own (each failure named once), and
// `spe compare` refusing to be a launcher's worker.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "spe/inference/saved_model.h"
#include "support/cli.h"
#include "support/ports.h"

namespace spe {
namespace {

namespace fs = std::filesystem;
using testing::free_port;
using testing::run_cli;
using testing::run_command;
using testing::scratch;

// A small float64 sineSPE classifier without dropout: 4 steps of 8 examples (4 per rank).
const std::string kRun = " train --config " SPE_SOURCE_DIR "/configs/listops/linear_sine_spe.yaml"
                         " --set model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32 model.dropout=0"
                         " model.positional.realizations=8 model.positional.sines=2 train.dtype=float64"
                         " train.batch_size=8 train.warmup_steps=1 train.eval_every=2 train.log_every=1 ";

fs::path distributed_listops() { return testing::small_listops("listops_dp", 5); }

int occurrences(const std::string& text, const std::string& word) {
  int n = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
  return n;
}

// The largest difference between the parameters of two checkpoints.
double max_parameter_difference(const fs::path& a, const fs::path& b) {
  const inference::SavedModel x = inference::load_saved_model(a.string()), y = inference::load_saved_model(b.string());
  const auto px = x.model->named_parameters(), py = y.model->named_parameters();
  EXPECT_EQ(px.size(), py.size());
  double difference = 0;
  for (const auto& p : px) {
    EXPECT_EQ(p.value().scalar_type(), at::kDouble) << p.key();
    difference = std::max(difference, (p.value() - py[p.key()]).abs().max().item<double>());
  }
  return difference;
}

TEST(CliDistributed, TwoProcessesEqualOneOverTheSameGlobalBatch) {
  const std::string data = " data.dir=" + distributed_listops().string();
  const fs::path one = scratch("dp_one"), two = scratch("dp_two"), own = scratch("dp_own");
  auto run = run_cli("--threads 1" + kRun + "train.steps=4 train.rank_draws=shared" + data + " --out " + one.string());
  ASSERT_EQ(run.status, 0) << run.output;
  run = run_cli("--threads 2" + kRun + "train.steps=4 train.rank_draws=shared" + data + " --nproc 2 --out " + two.string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("starting on 2 ranks"), std::string::npos) << run.output;
  EXPECT_EQ(occurrences(run.output, "validation loss"), 2) << run.output;  // rank 0 alone prints
  EXPECT_LT(max_parameter_difference(one / "checkpoint.pt", two / "checkpoint.pt"), 1e-10);
  // Each rank drawing its own codes is another computation: the comparison above can fail.
  run = run_cli("--threads 2" + kRun + "train.steps=4 train.rank_draws=own" + data + " --nproc 2 --out " + own.string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_GT(max_parameter_difference(one / "checkpoint.pt", own / "checkpoint.pt"), 1e-6);

  // Only rank 0 writes: one train line per step, one validation line per evaluation.
  std::ifstream metrics(two / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 4 + 2);

  // Resuming needs the same number of processes; the data must split evenly.
  run = run_cli("--threads 1 train --resume --out " + two.string() + " --set train.steps=6");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("was written by a run of 2 process(es) and this run has 1: resume it with 2"),
            std::string::npos)
      << run.output;
  run = run_cli("--threads 2 train --resume --nproc 2 --out " + two.string() + " --set train.steps=6");
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("resuming at step 4 on 2 ranks"), std::string::npos) << run.output;
  run = run_cli("--threads 2" + kRun + "train.steps=4 train.batch_size=6 train.accumulation=2" + data +
                " --nproc 2 --out " + scratch("dp_odd").string());
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("train.batch_size (6) does not split evenly into 2 rank(s) x 2 micro-batch(es)"),
            std::string::npos)
      << run.output;
}

TEST(CliDistributed, TorchrunStartsTheSameTraining) {
  if (!fs::exists("/usr/bin/torchrun")) GTEST_SKIP() << "torchrun (python3-torch) is not installed";
  const std::string data = " data.dir=" + distributed_listops().string();
  const fs::path ours = scratch("dp_nproc"), theirs = scratch("dp_torchrun");
  auto run = run_cli("--threads 2" + kRun + "train.steps=3" + data + " --nproc 2 --out " + ours.string());
  ASSERT_EQ(run.status, 0) << run.output;
  // torchrun serves the store itself (TORCHELASTIC_USE_AGENT_STORE=True): rank 0 is a client.
  const std::string torchrun = "OMP_NUM_THREADS=1 /usr/bin/torchrun --no_python --redirects 1 --tee 1 --nproc_per_node 2 "
                               "--master_port " + std::to_string(free_port()) + " " SPE_CLI;
  run = run_command(torchrun + kRun + "train.steps=3" + data + " --out " + theirs.string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_LT(max_parameter_difference(ours / "checkpoint.pt", theirs / "checkpoint.pt"), 1e-10) << run.output;
}

// Two "hosts": network namespaces joined by a veth pair, 10.77.0.1 and 10.77.0.2, one rank in
// each, started by hand with torchrun's variables (rank 0 serves the store). Needs root and ip(8).
TEST(CliDistributed, TwoHostsJoinedByAVethPair) {
  if (geteuid() != 0 || !fs::exists("/usr/sbin/ip")) GTEST_SKIP() << "needs root and /usr/sbin/ip for namespaces";
  const std::string data = " data.dir=" + distributed_listops().string();
  const fs::path local = scratch("dp_local"), hosts = scratch("dp_hosts");
  auto run = run_cli("--threads 2" + kRun + "train.steps=3" + data + " --nproc 2 --out " + local.string());
  ASSERT_EQ(run.status, 0) << run.output;
  const std::string id = std::to_string(getpid() % 100000);
  const std::string a = "spe_a" + id, b = "spe_b" + id, va = "va" + id, vb = "vb" + id;
  const std::string worker = " OMP_NUM_THREADS=1 WORLD_SIZE=2 MASTER_ADDR=10.77.0.1 MASTER_PORT=29555 " SPE_CLI + kRun +
                             "train.steps=3" + data + " --out " + hosts.string();
  const std::string script =
      "set -e; trap 'ip netns del " + a + " 2>/dev/null; ip netns del " + b + " 2>/dev/null' EXIT; "
      "ip netns add " + a + "; ip netns add " + b + "; ip link add " + va + " type veth peer name " + vb + "; "
      "ip link set " + va + " netns " + a + "; ip link set " + vb + " netns " + b + "; "
      "ip -n " + a + " addr add 10.77.0.1/24 dev " + va + "; ip -n " + b + " addr add 10.77.0.2/24 dev " + vb + "; "
      "for n in " + a + ":" + va + " " + b + ":" + vb + "; do ip -n ${n%:*} link set lo up; ip -n ${n%:*} link set ${n#*:} up; done; "
      "ip netns exec " + a + " env RANK=0" + worker + " & first=$!; "
      "ip netns exec " + b + " env RANK=1" + worker + "; wait $first";
  const fs::path script_file = scratch("two_hosts.sh");
  std::ofstream(script_file) << script << "\n";
  run = run_command("sh " + script_file.string());
  if (run.output.find("Operation not permitted") != std::string::npos)
    GTEST_SKIP() << "this machine does not allow network namespaces: " << run.output;
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_LT(max_parameter_difference(local / "checkpoint.pt", hosts / "checkpoint.pt"), 1e-10) << run.output;
}

// The pids of `parent`'s children, by the RANK in their environment.
std::map<int, pid_t> workers_of(pid_t parent) {
  std::map<int, pid_t> workers;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(line.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream environment(entry.path() / "environ", std::ios::binary);
    for (std::string variable; std::getline(environment, variable, '\0');)
      if (variable.rfind("RANK=", 0) == 0) workers[std::stoi(variable.substr(5))] = std::stoi(name);
  }
  return workers;
}

TEST(CliDistributed, AKilledWorkerStopsTheOthersWithinTheTimeout) {
  const std::string data = " data.dir=" + distributed_listops().string();
  const fs::path out = scratch("dp_killed"), log = scratch("dp_killed.log");
  const std::string command = std::string("exec ") + SPE_CLI + " --threads 2" + kRun + "train.steps=100000" + data +
                              " --nproc 2 --timeout 20 --out " + out.string() + " > " + log.string() + " 2>&1";
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  using Clock = std::chrono::steady_clock;
  auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const auto started = Clock::now();
  while (!(fs::exists(out / "metrics.jsonl") && fs::file_size(out / "metrics.jsonl") > 0) && seconds_since(started) < 120)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::map<int, pid_t> workers = workers_of(launcher);
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(kill(workers.at(1), SIGKILL), 0);
  const auto killed = Clock::now();
  int status = 0;
  while (waitpid(launcher, &status, WNOHANG) == 0 && seconds_since(killed) < 60)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double waited = seconds_since(killed);
  if (waited >= 60) kill(launcher, SIGKILL);
  std::ifstream in(log);
  std::stringstream output;
  output << in.rdbuf();
  EXPECT_LT(waited, 20.0) << output.str();  // within the timeout; in fact at once (the connection closes)
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << output.str();
  // One failure, one error line: the launcher's names the rank that went, and rank 0 as a
  // consequence (rank 0's own error, naming rank 1 too, went to the launcher's store, not stderr).
  EXPECT_EQ(occurrences(output.str(), "error: "), 1) << output.str();
  EXPECT_NE(output.str().find(fmt::format("error: data-parallel training on 2 processes failed: rank 1 (pid {}) was "
                                          "killed by signal 9 (Killed); rank 0 stopped because rank 1 failed\n",
                                          workers.at(1))),
            std::string::npos)
      << output.str();
  EXPECT_EQ(occurrences(output.str(), "did not stop; killing it"), 0) << output.str();  // nothing per worker
}

// A failure of rank 0's own (its --out holds a run already) under `--nproc 3`: the launcher's
// line quotes it once and names the others as stopped because of it.
TEST(CliDistributed, ARanksOwnFailureIsNamedOnceWithTheRestAsConsequences) {
  const fs::path out = scratch("dp_taken");
  fs::create_directories(out);
  std::ofstream(out / "checkpoint.pt") << "a run's checkpoint\n";
  const auto run = run_cli("--threads 3" + kRun + "train.steps=2 train.batch_size=6 data.dir=" +
                           distributed_listops().string() + " --nproc 3 --out " + out.string());
  EXPECT_EQ(run.status, 1) << run.output;
  const std::string own =
      fmt::format("'{}' already holds a run (checkpoint.pt); resume it or choose another output folder", out.string());
  const size_t line = run.output.find("error: data-parallel training on 3 processes failed: rank 0 (pid ");
  ASSERT_NE(line, std::string::npos) << run.output;
  EXPECT_NE(run.output.find("failed: " + own + "; ranks 1, 2 stopped because rank 0 failed\n", line), std::string::npos)
      << run.output;
  EXPECT_EQ(occurrences(run.output, "stopped because"), 1) << run.output;
  EXPECT_EQ(occurrences(run.output, "error: "), 1) << run.output;  // not one per rank
}

TEST(CliDistributed, CompareRefusesToBeALaunchersWorker) {
  const std::string advice = "run `spe compare` once, without torchrun; to train one configuration data-parallel, run "
                             "`spe train` under torchrun or `spe train --nproc N`";
  for (const std::string variables : {"WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500",
                                      "WORLD_SIZE=1 RANK=0 TORCHELASTIC_RUN_ID=none"}) {
    const auto run = run_command(variables + " " SPE_CLI " compare --out " + scratch("compare_worker").string());
    EXPECT_EQ(run.status, 1) << variables << ": " << run.output;
    EXPECT_NE(run.output.find("spe compare trains its runs one after another in one process, so it cannot be one of a "
                              "launcher's workers ("),
              std::string::npos)
        << run.output;
    EXPECT_NE(run.output.find(advice), std::string::npos) << run.output;
  }
  EXPECT_FALSE(fs::exists(scratch("compare_worker"))) << "nothing ran";
}

}  // namespace
}  // namespace spe
