// Data-parallel building blocks, with the ranks as threads of this process on loopback: the
// launch environment, the collectives, the gradient reducer against sums computed by hand, the
// errors for a peer that leaves (named by the survivors), one that stays silent, a port in use and
// no master, and the launcher's one-line summary of a failure.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <cerrno>
#include <chrono>
#include <functional>
#include <map>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "spe/train/distributed.h"
#include "support/errors.h"
#include "support/ports.h"

namespace spe::train {
namespace {

using Clock = std::chrono::steady_clock;
using testing::free_port;

LaunchEnvironment rank_of(int64_t rank, int64_t world_size, int port, bool agent_store = false) {
  LaunchEnvironment e;
  e.rank = e.local_rank = rank;
  e.world_size = world_size;
  e.master_port = port;
  e.agent_store = agent_store;
  return e;
}

// A rendezvous store served here, as torchrun's agent and `spe train --nproc` serve it: it
// outlives every rank.
c10::intrusive_ptr<c10d::TCPStore> serve_store() {
  c10d::TCPStoreOptions options;
  options.port = 0;
  options.isServer = true;
  options.waitWorkers = false;
  return c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
}

// Runs body(group) on `world_size` ranks, each in its own thread; rethrows the first failure. The
// store is rank 0's, or with `agent_store` served by this thread.
void on_ranks(int64_t world_size, const std::function<void(ProcessGroup&)>& body, double timeout_s = 20,
              bool agent_store = false) {
  const auto store = agent_store ? serve_store() : c10::intrusive_ptr<c10d::TCPStore>();
  const int port = agent_store ? store->getPort() : free_port();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world_size));
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world_size; ++r)
    threads.emplace_back([&, r] {
      try {
        ProcessGroup group(rank_of(r, world_size, port, agent_store), timeout_s);
        body(group);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

EnvironmentLookup lookup_in(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const char* name) -> const char* {
    const auto found = variables.find(name);
    return found == variables.end() ? nullptr : found->second.c_str();
  };
}

TEST(LaunchEnvironment, ReadsTorchrunsVariables) {
  EXPECT_FALSE(launch_environment(lookup_in({})).has_value());
  const auto e = launch_environment(lookup_in({{"RANK", "1"},
                                               {"WORLD_SIZE", "3"},
                                               {"LOCAL_RANK", "0"},
                                               {"MASTER_ADDR", "10.0.0.7"},
                                               {"MASTER_PORT", "29511"},
                                               {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                               {"TORCHELASTIC_RESTART_COUNT", "2"},
                                               {"SPE_LOCAL_LAUNCHER", "1"}}));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->rank, 1);
  EXPECT_EQ(e->world_size, 3);
  EXPECT_EQ(e->local_rank, 0);
  EXPECT_EQ(e->master_addr, "10.0.0.7");
  EXPECT_EQ(e->master_port, 29511);
  EXPECT_TRUE(e->agent_store);
  EXPECT_EQ(e->restart_count, 2);
  EXPECT_TRUE(e->local_launcher);
  const auto standalone = launch_environment(lookup_in({{"RANK", "0"}, {"WORLD_SIZE", "1"}}));
  ASSERT_TRUE(standalone.has_value());
  EXPECT_FALSE(standalone->agent_store);
  EXPECT_FALSE(standalone->local_launcher);
}

TEST(LaunchEnvironment, NamesTheBadVariable) {
  const std::map<std::string, std::string> good{
      {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& name, const char* value) {
    auto v = good;
    if (value)
      v[name] = value;
    else
      v.erase(name);
    return lookup_in(v);
  };
  EXPECT_ERROR_CONTAINS(launch_environment(with("RANK", "2")), "RANK is '2', expected an integer from 0 to 1");
  EXPECT_ERROR_CONTAINS(launch_environment(with("WORLD_SIZE", "two")), "WORLD_SIZE is 'two'");
  EXPECT_ERROR_CONTAINS(launch_environment(with("MASTER_PORT", "70000")), "MASTER_PORT is '70000', expected an integer from 1 to 65535");
  EXPECT_ERROR_CONTAINS(launch_environment(with("MASTER_PORT", nullptr)), "WORLD_SIZE is set but MASTER_PORT is not");
  EXPECT_ERROR_CONTAINS(launch_environment(with("RANK", nullptr)), "WORLD_SIZE is set but RANK is not");
}

TEST(LaunchEnvironment, TellsALaunchersWorker) {
  EXPECT_FALSE(launched_as_worker(lookup_in({})).has_value());
  EXPECT_FALSE(launched_as_worker(lookup_in({{"WORLD_SIZE", "1"}, {"RANK", "0"}})).has_value());
  EXPECT_EQ(launched_as_worker(lookup_in({{"WORLD_SIZE", "4"}, {"RANK", "2"}})), "WORLD_SIZE is 4");
  EXPECT_EQ(launched_as_worker(lookup_in({{"WORLD_SIZE", "1"}, {"TORCHELASTIC_RUN_ID", "none"}})),
            "TORCHELASTIC_RUN_ID is set: torchrun started it");
}

TEST(ProcessGroup, SumsBroadcastsAndGathers) {
  on_ranks(3, [](ProcessGroup& group) {
    const double r = static_cast<double>(group.rank());
    at::Tensor x = at::full({4}, r + 1, at::kDouble);
    group.all_reduce_sum(x);
    EXPECT_TRUE(at::equal(x, at::full({4}, 6.0, at::kDouble)));
    at::Tensor y = at::full({2, 3}, r, at::kFloat), z = at::full({5}, 10 * r, at::kLong);
    group.broadcast({y, z}, 2);
    EXPECT_TRUE(at::equal(y, at::full({2, 3}, 2.0, at::kFloat)));
    EXPECT_TRUE(at::equal(z, at::full({5}, 20, at::kLong)));
    const std::vector<at::Tensor> all = group.all_gather(at::full({2}, r, at::kDouble));
    ASSERT_EQ(all.size(), 3u);
    for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(all[static_cast<size_t>(k)][1].item<double>(), k);
    group.check_all("");  // nobody failed: no throw
  });
}

TEST(ProcessGroup, OneRanksErrorReachesEveryRank) {
  std::vector<std::string> messages(2);
  on_ranks(2, [&](ProcessGroup& group) {
    try {
      group.check_all(group.rank() == 1 ? "the data folder is missing" : "");
    } catch (const DistributedError& e) {
      messages[static_cast<size_t>(group.rank())] = e.what();
    }
  });
  for (const std::string& m : messages) EXPECT_EQ(m, "rank 1: the data folder is missing");
}

// Rank 0 serves the store: a rank that throws first and closes its group must not take the other
// ranks' messages with it (it once did, as "Broken pipe" on the rank still reading). Many rounds,
// each failing rank leaving at once, so the race has its chances.
TEST(ProcessGroup, EveryRankGetsEveryMessageWhoeverLeavesFirst) {
  for (int round = 0; round < 10; ++round) {
    std::vector<std::string> messages(3);
    on_ranks(3, [&](ProcessGroup& group) {
      const int64_t r = group.rank();
      try {
        group.check_all("");
        group.check_all(r == 0 ? "no disk" : r == 2 ? std::string(1000, 'x') : "");
      } catch (const DistributedError& e) {
        messages[static_cast<size_t>(r)] = e.what();
      }
    });
    for (const std::string& m : messages) ASSERT_EQ(m, "rank 0: no disk; rank 2: " + std::string(1000, 'x')) << round;
  }
}

// Two ranks, each a copy of one small model on its own data: the reducer's result is the sum of
// the two ranks' gradients, computed here on one rank; for several buckets, a parameter that gets
// no gradient, and gradients accumulated over two passes of which only the last is armed.
// The initial values are drawn once, here: the ranks are threads, and seeding the global
// generator in each let one rank's draws interleave with the other's (CI saw it under ASan).
TEST(GradientReducer, GivesTheSumOfEveryRanksGradients) {
  at::manual_seed(7);
  const std::vector<at::Tensor> initial{at::randn({5, 4}, at::kDouble), at::randn({4}, at::kDouble),
                                        at::randn({4, 3}, at::kDouble), at::randn({3}, at::kDouble)};  // last unused
  auto make_parameters = [&initial] {
    std::vector<at::Tensor> parameters;
    for (const at::Tensor& t : initial) parameters.push_back(t.clone().requires_grad_());
    return parameters;
  };
  auto loss_of = [](const std::vector<at::Tensor>& p, const at::Tensor& x) {
    return (at::tanh(x.matmul(p[0]) + p[1]).matmul(p[2])).pow(2).sum();
  };
  auto data_of = [](int64_t rank, int64_t pass) {
    return at::full({6, 5}, 0.1 * static_cast<double>(rank + 1) + 0.01 * static_cast<double>(pass), at::kDouble) +
           at::arange(30, at::kDouble).reshape({6, 5}) / 30.0;
  };
  std::vector<at::Tensor> expected = make_parameters();
  for (int64_t rank = 0; rank < 2; ++rank)
    for (int64_t pass = 0; pass < 2; ++pass) loss_of(expected, data_of(rank, pass)).backward();

  on_ranks(2, [&](ProcessGroup& group) {
    std::vector<at::Tensor> parameters = make_parameters();
    GradientReducer reducer(group, parameters, /*bucket_bytes=*/64);  // a bucket or two per tensor
    for (int step = 0; step < 2; ++step) {  // the reducer is reusable: same sums twice
      for (at::Tensor& p : parameters) p.mutable_grad() = at::Tensor();
      loss_of(parameters, data_of(group.rank(), 0)).backward();
      reducer.arm();
      loss_of(parameters, data_of(group.rank(), 1)).backward();
      reducer.finish();
      for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(at::allclose(parameters[k].grad(), expected[k].grad(), 1e-12, 1e-12)) << k;
      ASSERT_TRUE(parameters[3].grad().defined());
      EXPECT_EQ(parameters[3].grad().abs().sum().item<double>(), 0.0);
    }
  });
}

// Rank 0's second sum while rank 1 does `other` instead of joining it: the error and the wait.
struct FailedSum {
  std::string message;
  double waited = 0;
};
FailedSum second_sum_without_rank_1(const std::function<void(ProcessGroup&)>& other, double timeout_s) {
  FailedSum result;
  on_ranks(2, [&](ProcessGroup& group) {
    at::Tensor x = at::ones({1});
    group.all_reduce_sum(x);  // both are here
    if (group.rank() == 1) return other(group);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto start = Clock::now();
    try {
      group.all_reduce_sum(x);
    } catch (const DistributedError& e) {
      result.message = e.what();
    }
    result.waited = std::chrono::duration<double>(Clock::now() - start).count();
  }, timeout_s);
  return result;
}

TEST(ProcessGroup, APeerThatLeavesIsAnErrorAtOnce) {
  // Rank 1 reports a failure and leaves: its group closes its connections.
  const FailedSum r = second_sum_without_rank_1([](ProcessGroup& group) { group.report_failure("out of disk space"); }, 30);
  EXPECT_NE(r.message.find("rank 0 of 2: the sum across ranks failed"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("Rank 1 failed: out of disk space"), std::string::npos) << r.message;
  EXPECT_LT(r.waited, 10.0);  // far below the 30 s deadline: the closed connection is seen at once
}

std::string this_host() {
  char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

TEST(ProcessGroup, ASurvivorNamesTheRankThatIsGone) {
  // Rank 1 leaves without a word, as a killed process does: its connections close.
  const FailedSum r = second_sum_without_rank_1([](ProcessGroup&) {}, 30);
  EXPECT_NE(r.message.find("Connection closed by peer [127.0.0.1]:"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find(fmt::format("Rank 1 (host {}, pid {}) is gone: it was killed (out of memory?) or crashed.",
                                       this_host(), getpid())),
            std::string::npos)
      << r.message;
  EXPECT_LT(r.waited, 10.0);
}

// Four ranks under a launcher's store: when rank 1 goes, the ranks whose error names another
// survivor that stopped because of it (the sums pass along a ring) still name rank 1.
TEST(ProcessGroup, EverySurvivorNamesTheFirstRankThatWent) {
  for (int round = 0; round < 3; ++round) {
    std::vector<std::string> messages(4);
    on_ranks(4, [&](ProcessGroup& group) {
      at::Tensor x = at::ones({1000});
      group.all_reduce_sum(x);
      if (group.rank() == 1) return;
      try {
        group.all_reduce_sum(x);
      } catch (const DistributedError& e) {
        messages[static_cast<size_t>(group.rank())] = e.what();
      }
    }, 20, /*agent_store=*/true);
    const std::string gone = fmt::format("Rank 1 (host {}, pid {}) is gone", this_host(), getpid());
    for (int64_t r : {0, 2, 3})
      EXPECT_NE(messages[static_cast<size_t>(r)].find(gone), std::string::npos)
          << "round " << round << ", rank " << r << ": " << messages[static_cast<size_t>(r)];
  }
}

// Gloo's writes to a peer that has gone raise SIGPIPE, whose default action killed a survivor
// before it could name the rank that went (seen under the sanitizers): with a group, writing to a
// closed pipe is an EPIPE error and this process goes on.
TEST(ProcessGroup, AWriteToAClosedPeerIsAnErrorNotTheEndOfTheProcess) {
  on_ranks(1, [](ProcessGroup&) {});
  int ends[2];
  ASSERT_EQ(pipe(ends), 0);
  close(ends[0]);
  const char byte = 0;
  errno = 0;
  EXPECT_EQ(write(ends[1], &byte, 1), -1);
  EXPECT_EQ(errno, EPIPE);
  close(ends[1]);
}

TEST(ProcessGroup, ASilentPeerIsAnErrorAtTheDeadline) {
  // Rank 1 stays alive but never joins the sum. (The deadline also bounds the rendezvous, which
  // takes seconds when ctest loads the cores: hence 5 s, not less.)
  const FailedSum r =
      second_sum_without_rank_1([](ProcessGroup&) { std::this_thread::sleep_for(std::chrono::seconds(10)); }, 5);
  EXPECT_NE(r.message.find("rank 0 of 2: the sum across ranks failed"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("did not answer within the timeout of 5 s"), std::string::npos) << r.message;
  EXPECT_GE(r.waited, 4.5);
  EXPECT_LT(r.waited, 9.0);
}

TEST(ProcessGroup, AFailureInCheckAllIsLeftForTheOthers) {
  // What rank 1 gave check_all stays in the store, for the launcher and for whoever's collective
  // fails later: here rank 0's next sum, after rank 1 has left.
  on_ranks(2, [](ProcessGroup& group) {
    EXPECT_ERROR_CONTAINS(group.check_all(group.rank() == 1 ? "no data" : ""), "rank 1: no data");
    if (group.rank() == 1) return;
    at::Tensor x = at::ones({1});
    EXPECT_ERROR_CONTAINS(group.all_reduce_sum(x), "Rank 1 failed: no data.");
  });
}

TEST(LocalWorkers, OneLineNamesTheCauseOnceAndTheRest) {
  // Rank 2 was killed; rank 0 had stopped on its own failed collective, rank 3 did not stop in time.
  EXPECT_EQ(describe_failures({{0, 100, 1, false, "", ""},
                               {2, 102, 128 + 9, false, "", ""},
                               {1, 101, 0, false, "", ""},
                               {3, 103, 128 + 9, true, "", ""}}),
            "rank 2 (pid 102) was killed by signal 9 (Killed); ranks 0, 3 stopped because rank 2 failed");
  // A reported failure is quoted, in the order the workers ended.
  EXPECT_EQ(describe_failures(
                {{1, 101, 1, false, "no disk", ""}, {0, 100, 1, false, "", ""}, {2, 102, 1, false, "no data", ""}}),
            "rank 1 (pid 101) failed: no disk; rank 2 (pid 102) failed: no data; rank 0 stopped because ranks 1, 2 "
            "failed");
  // Nobody said why (a failure before the ranks met): each worker's end, its message being above.
  EXPECT_EQ(describe_failures({{0, 100, 1, false, "", ""}, {1, 101, 2, false, "", ""}}),
            "rank 0 (pid 100) exited with status 1 (its error is above); rank 1 (pid 101) exited with status 2 "
            "(its error is above)");
  // Nobody failed on its own (all timed out, say), and each left the error it stopped with: quoted.
  EXPECT_EQ(describe_failures({{0, 100, 1, false, "", "rank 0 of 2: no answer within 20 s"},
                               {1, 101, 1, false, "", "rank 1 of 2: no answer within 20 s"}}),
            "rank 0 (pid 100) exited with status 1: rank 0 of 2: no answer within 20 s; rank 1 (pid 101) exited with "
            "status 1: rank 1 of 2: no answer within 20 s");
  EXPECT_EQ(describe_failures({{0, 100, 0, false, "", ""}, {1, 101, 0, false, "", ""}}), "");
}

TEST(ProcessGroup, PortInUseAndNoMasterAreNamed) {
  int busy = 0;
  const int fd = testing::bind_loopback(busy, /*listening=*/true);  // a port held by another socket
  EXPECT_ERROR_CONTAINS(ProcessGroup(rank_of(0, 2, busy), 2), "is the port in use?");
  close(fd);
  // Nobody serves this port: rank 1 gives up after its timeout.
  const auto start = Clock::now();
  EXPECT_ERROR_CONTAINS(ProcessGroup(rank_of(1, 2, free_port()), 1.5), "cannot reach the rendezvous store at 127.0.0.1");
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 10.0);
}

}  // namespace
}  // namespace spe::train
