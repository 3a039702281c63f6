#include "spe/train/distributed.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <unistd.h>

#include <gloo/transport/pair.h>
#include <gloo/transport/tcp/address.h>

#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <algorithm>
#include <cctype>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "spe/util/process.h"

extern char** environ;

namespace spe::train {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds to_milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

int64_t parse_variable(const char* name, const char* text, int64_t min, int64_t max) {
  const std::string value(text);
  int64_t parsed = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
  if (error != std::errc() || end != value.data() + value.size() || value.empty() || parsed < min || parsed > max)
    throw std::invalid_argument(
        fmt::format("the environment variable {} is '{}', expected an integer from {} to {}", name, value, min, max));
  return parsed;
}

// The first line of an error (c10 errors carry a backtrace after it).
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

// What the store holds about each rank: "failed/<rank>" its failure as it reported it,
// "stopped/<rank>" the rank it stopped because of, "address/<rank>" where it runs, "error/<rank>"
// the error it stopped with (workers of run_local_workers, for its summary).
std::string rank_key(const char* record, int64_t rank) { return std::string(record) + "/" + std::to_string(rank); }

// What rank r left in the store under `record` ("failed", "error"), or "" when it left nothing.
std::string left_in_store(c10d::Store& store, const char* record, int64_t r) {
  const std::string key = rank_key(record, r);
  if (!store.check({key})) return "";
  const std::vector<uint8_t> message = store.get(key);
  return {message.begin(), message.end()};
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

// The local address this host uses to reach `host`: the one the other ranks can reach us at.
// (The host name may resolve to 127.0.1.1 on Debian, which no other host can reach.)
std::string local_address_towards(const std::string& host, int64_t port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    throw DistributedError(fmt::format("MASTER_ADDR '{}' does not resolve to an IPv4 address", host));
  std::string address;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t length = sizeof local;
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
    char text[INET_ADDRSTRLEN] = {};
    if (inet_ntop(AF_INET, &local.sin_addr, text, sizeof text)) address = text;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  if (address.empty()) throw DistributedError(fmt::format("no network route from this host to MASTER_ADDR '{}'", host));
  return address;
}

std::shared_ptr<::gloo::transport::Device> make_device(const LaunchEnvironment& e) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  if (is_loopback(e.master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDeviceForHostname(local_address_towards(e.master_addr, e.master_port));
}

// ProcessGroupGloo that tells the addresses of its connections, which Gloo's errors on the other
// ranks name ("Connection closed by peer [10.0.0.5]:41235").
class GlooGroup : public c10d::ProcessGroupGloo {
 public:
  using ProcessGroupGloo::ProcessGroupGloo;

  // "[ip]:port" of this end of the connection with each rank ("-" for this rank itself).
  std::vector<std::string> connection_addresses() {
    std::vector<std::string> addresses;
    for (int r = 0; r < getSize(); ++r)
      addresses.push_back(r == getRank() ? "-" : contexts_.at(0)->getPair(r)->address().str());
    return addresses;
  }
};

// The address rank r offered rank `me` at Gloo's rendezvous, where it listened for that
// connection: Gloo keeps each rank's, one per other rank, under "0/<r>" in the store it was given.
// A peer that connected before `me` looked it up leaves it in `me`'s errors instead of the other
// end's own address.
std::string rendezvous_address(c10d::Store& gloo_store, int64_t r, int64_t me, int64_t world_size) {
  const std::vector<uint8_t> all = gloo_store.get("0/" + std::to_string(r));
  const size_t each = all.size() / static_cast<size_t>(world_size - 1);
  const auto begin = all.begin() + static_cast<std::ptrdiff_t>(each * static_cast<size_t>(me < r ? me : me - 1));
  return ::gloo::transport::tcp::Address(std::vector<char>(begin, begin + static_cast<std::ptrdiff_t>(each))).str();
}

// The first peer address ("[ip]:port") a Gloo error names, or "" when it names none.
std::string peer_address_in(const std::string& error) {
  for (size_t open = error.find('['); open != std::string::npos; open = error.find('[', open + 1)) {
    const size_t close = error.find_first_of("[] ", open + 1);
    if (close == std::string::npos || error[close] != ']' || close == open + 1) continue;
    size_t end = close + 1;
    if (end >= error.size() || error[end] != ':') continue;
    while (end + 1 < error.size() && std::isdigit(static_cast<unsigned char>(error[end + 1]))) ++end;
    if (end > close + 1) return error.substr(open, end + 1 - open);
  }
  return "";
}

std::string host_name() {
  char name[256] = {};
  return gethostname(name, sizeof name - 1) == 0 ? name : "unknown";
}

const char* variable(const EnvironmentLookup& lookup, const char* name) {
  return lookup ? lookup(name) : std::getenv(name);
}

}  // namespace

std::optional<LaunchEnvironment> launch_environment(const EnvironmentLookup& lookup) {
  auto get = [&](const char* name) { return variable(lookup, name); };
  const char* world = get("WORLD_SIZE");
  if (!world) return std::nullopt;
  LaunchEnvironment e;
  e.world_size = parse_variable("WORLD_SIZE", world, 1, 1 << 20);
  auto required = [&](const char* name) {
    const char* value = get(name);
    if (!value)
      throw std::invalid_argument(
          fmt::format("WORLD_SIZE is set but {} is not: a data-parallel launch needs RANK, WORLD_SIZE, MASTER_ADDR "
                      "and MASTER_PORT (torchrun sets them)",
                      name));
    return value;
  };
  e.rank = parse_variable("RANK", required("RANK"), 0, e.world_size - 1);
  const char* local = get("LOCAL_RANK");
  e.local_rank = local ? parse_variable("LOCAL_RANK", local, 0, e.world_size - 1) : e.rank;
  if (e.world_size > 1) {
    e.master_addr = required("MASTER_ADDR");
    if (e.master_addr.empty()) throw std::invalid_argument("the environment variable MASTER_ADDR is empty");
    e.master_port = parse_variable("MASTER_PORT", required("MASTER_PORT"), 1, 65535);
  }
  const char* agent = get("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent && (std::string(agent) == "True" || std::string(agent) == "true" || std::string(agent) == "1");
  const char* launcher = get("SPE_LOCAL_LAUNCHER");
  e.local_launcher = launcher && std::string(launcher) == "1";
  const char* restarts = get("TORCHELASTIC_RESTART_COUNT");
  e.restart_count = restarts ? parse_variable("TORCHELASTIC_RESTART_COUNT", restarts, 0, 1 << 30) : 0;
  return e;
}

std::optional<std::string> launched_as_worker(const EnvironmentLookup& lookup) {
  const char* world = variable(lookup, "WORLD_SIZE");
  if (world && std::string(world) != "1") return fmt::format("WORLD_SIZE is {}", world);
  if (variable(lookup, "TORCHELASTIC_RUN_ID")) return std::string("TORCHELASTIC_RUN_ID is set: torchrun started it");
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// ProcessGroup

struct ProcessGroup::Impl {
  // Where a rank runs: its host and pid, and the addresses Gloo may give in this rank's errors for
  // its connection with this rank.
  struct Peer {
    std::string host;
    int64_t pid = 0;
    std::vector<std::string> addresses;
  };
  int64_t rank = 0, world_size = 1;
  double timeout_s = 60;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  std::vector<Peer> peers;  // by rank

  // Leaves this rank's host, pid and the addresses of its ends of its connections in the store
  // ("h 4242 [ip]:port - ...", one address per rank), and reads every rank's. Best effort: without
  // them the errors name no rank, as before.
  void publish_addresses(GlooGroup& group, c10d::Store& gloo_store) noexcept {
    try {
      exchange_addresses(group, gloo_store);
    } catch (const std::exception&) {
      peers.clear();
    }
  }

  void exchange_addresses(GlooGroup& group, c10d::Store& gloo_store) {
    const std::string own =
        fmt::format("{} {} {}", host_name(), getpid(), fmt::join(group.connection_addresses(), " "));
    store->set(rank_key("address", rank), bytes_of(own));
    for (int64_t r = 0; r < world_size; ++r) {
      const std::vector<uint8_t> text = store->get(rank_key("address", r));
      std::istringstream fields(std::string(text.begin(), text.end()));
      Peer peer;
      std::string address;
      fields >> peer.host >> peer.pid;
      for (int64_t k = 0; k <= rank; ++k) fields >> address;
      if (r != rank) peer.addresses = {address, rendezvous_address(gloo_store, r, rank, world_size)};
      peers.push_back(peer);
    }
  }

  // "(host h, pid p)" of rank r.
  std::string whereabouts(int64_t r) const {
    const Peer& p = peers.at(static_cast<size_t>(r));
    return fmt::format("(host {}, pid {})", p.host, p.pid);
  }

  // The other rank whose Gloo address `error` names, if any.
  std::optional<int64_t> rank_named_in(const std::string& error) const {
    const std::string address = peer_address_in(error);
    for (int64_t r = 0; r < static_cast<int64_t>(peers.size()); ++r) {
      const std::vector<std::string>& known = peers[static_cast<size_t>(r)].addresses;
      if (!address.empty() && std::find(known.begin(), known.end(), address) != known.end()) return r;
    }
    return std::nullopt;
  }

  // What the other ranks left in the store about their own failures ("" when none did).
  std::string failure_reports() const {
    std::string reports;
    for (int64_t r = 0; r < world_size; ++r) {
      const std::string failure = r == rank ? "" : left_in_store(*store, "failed", r);
      if (!failure.empty()) reports += fmt::format(" Rank {} failed: {}.", r, failure);
    }
    return reports;
  }

  // The rank that `gone` stopped because of, as `gone` recorded it: itself when it recorded
  // nothing (it was killed or crashed), nullopt when it could not tell either.
  std::optional<int64_t> first_gone(int64_t gone) const {
    const std::string key = rank_key("stopped", gone);
    if (!store->check({key})) return gone;
    const std::vector<uint8_t> cause = store->get(key);
    if (cause.empty()) return std::nullopt;
    return std::stoll(std::string(cause.begin(), cause.end()));
  }

  // Why a collective failed, as far as this rank can tell, for its error message; `gone` is the
  // rank whose address the Gloo error names. Leaves the cause as "stopped/<rank>" for the ranks
  // that see this one go in their turn.
  std::string explain(std::optional<int64_t> gone) const {
    try {
      const std::string reports = failure_reports();
      std::optional<int64_t> cause;
      if (gone) cause = first_gone(*gone);
      store->set(rank_key("stopped", rank), bytes_of(cause ? std::to_string(*cause) : ""));
      if (!reports.empty()) return reports;
      if (!gone) return silent_peer_message();
      if (!cause)
        return fmt::format(" Rank {} {} stopped when a collective failed there too.", *gone, whereabouts(*gone));
      return gone_message(*cause, *gone);
    } catch (const std::exception&) {
      const std::string store_gone = " The rendezvous store is gone too: rank 0 or the launcher has ended";
      if (!gone) return store_gone + ".";
      return fmt::format(" Rank {} {} is gone.{}, so whether rank {} failed first is unknown.", *gone,
                         whereabouts(*gone), store_gone, *gone);
    }
  }

  std::string gone_message(int64_t cause, int64_t gone) const {
    const std::string message =
        fmt::format(" Rank {} {} is gone: it was killed (out of memory?) or crashed.", cause, whereabouts(cause));
    return cause == gone ? message : message + fmt::format(" Rank {} stopped because of it.", gone);
  }

  std::string silent_peer_message() const {
    return fmt::format(" No other rank reported an error: one was killed (out of memory?), crashed, or did not answer "
                       "within the timeout of {} s; the launcher's output names it.",
                       timeout_s);
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) const {
    try {
      work->wait();
    } catch (const std::exception& e) {
      const std::string error = first_line(e.what());
      throw DistributedError(fmt::format("rank {} of {}: the {} across ranks failed: {}.{}", rank, world_size, what,
                                         error, explain(rank_named_in(error))));
    }
  }
};

namespace {

// Gloo writes to its peers with writev, which raises SIGPIPE when a peer has gone; its default
// action kills this rank before the failed write can become the error that names the peer. So a
// process with a group ignores SIGPIPE (as Python does at start, which is why torch's own tests do
// not see it); a handler a program installed itself is left as it is.
void ignore_broken_pipes() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
}

}  // namespace

ProcessGroup::ProcessGroup(const LaunchEnvironment& e, double timeout_s) : impl_(std::make_unique<Impl>()) {
  if (!(timeout_s > 0)) throw std::invalid_argument(fmt::format("the timeout is {} s, expected > 0", timeout_s));
  ignore_broken_pipes();
  impl_->rank = e.rank;
  impl_->world_size = e.world_size;
  impl_->timeout_s = timeout_s;
  const bool serves = e.rank == 0 && !e.agent_store;
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(e.master_port);
  options.isServer = serves;
  options.numWorkers = static_cast<size_t>(e.world_size);
  options.waitWorkers = false;
  options.timeout = to_milliseconds(timeout_s);
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(e.master_addr, options);
  } catch (const std::exception& error) {
    throw DistributedError(fmt::format(
        "rank {}: cannot {} the rendezvous store at {}:{}: {} ({})", e.rank, serves ? "serve" : "reach", e.master_addr,
        e.master_port, first_line(error.what()),
        serves ? "is the port in use? choose another MASTER_PORT"
               : "are MASTER_ADDR and MASTER_PORT right, and has rank 0 started?"));
  }
  // torchrun's agent store keeps each restart's keys under this prefix; ours does the same.
  impl_->store = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(e.restart_count), tcp);
  auto gloo_options = c10d::ProcessGroupGloo::Options::create(to_milliseconds(timeout_s));
  try {
    gloo_options->devices.push_back(make_device(e));
    const auto gloo_store = c10::make_intrusive<c10d::PrefixStore>("gloo", impl_->store);
    auto group = c10::make_intrusive<GlooGroup>(gloo_store, static_cast<int>(e.rank), static_cast<int>(e.world_size),
                                                gloo_options);
    if (e.world_size > 1) impl_->publish_addresses(*group, *gloo_store);
    impl_->gloo = group;
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& error) {
    throw DistributedError(fmt::format("rank {} of {}: the ranks did not all connect within {} s: {}", e.rank,
                                       e.world_size, timeout_s, first_line(error.what())));
  }
}

ProcessGroup::~ProcessGroup() = default;

int64_t ProcessGroup::rank() const { return impl_->rank; }
int64_t ProcessGroup::world_size() const { return impl_->world_size; }

void ProcessGroup::broadcast(std::vector<at::Tensor> tensors, int64_t root) {
  for (at::Tensor& tensor : tensors) {
    std::vector<at::Tensor> one{tensor.is_contiguous() ? tensor : tensor.contiguous()};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    impl_->wait(impl_->gloo->broadcast(one, options), "broadcast");
    if (!one[0].is_same(tensor)) tensor.copy_(one[0]);
  }
}

void ProcessGroup::all_reduce_sum(at::Tensor tensor) {
  std::vector<at::Tensor> one{tensor.is_contiguous() ? tensor : tensor.contiguous()};
  impl_->wait(impl_->gloo->allreduce(one), "sum");
  if (!one[0].is_same(tensor)) tensor.copy_(one[0]);
}

std::vector<at::Tensor> ProcessGroup::all_gather(const at::Tensor& tensor) {
  std::vector<at::Tensor> input{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int64_t r = 0; r < impl_->world_size; ++r) output[0].push_back(at::empty_like(input[0]));
  impl_->wait(impl_->gloo->allgather(output, input), "gather");
  return output[0];
}

void ProcessGroup::check_all(const std::string& local_error) {
  if (!local_error.empty()) report_failure(local_error);  // for the launcher's summary
  // The messages travel by the collectives, not the store: rank 0 serves the store, and once it
  // has thrown it may close it while another rank is still reading.
  const std::vector<at::Tensor> lengths = all_gather(at::full({1}, static_cast<int64_t>(local_error.size()), at::kLong));
  int64_t longest = 0;
  for (const at::Tensor& length : lengths) longest = std::max(longest, length.item<int64_t>());
  if (longest == 0) return;
  at::Tensor text = at::zeros({longest}, at::kByte);  // text: (longest,) this rank's message, zero-padded
  std::copy(local_error.begin(), local_error.end(), text.data_ptr<uint8_t>());
  const std::vector<at::Tensor> texts = all_gather(text);
  std::string message;
  for (int64_t r = 0; r < impl_->world_size; ++r) {
    const int64_t length = lengths[static_cast<size_t>(r)].item<int64_t>();
    if (length == 0) continue;
    const auto* bytes = texts[static_cast<size_t>(r)].data_ptr<uint8_t>();
    message += fmt::format("{}rank {}: {}", message.empty() ? "" : "; ", r, std::string(bytes, bytes + length));
  }
  throw DistributedError(message);
}

namespace {

bool leave_in_store(c10d::Store& store, const std::string& key, const std::string& message) noexcept {
  try {
    store.set(key, bytes_of(first_line(message)));
    return true;
  } catch (...) {  // the store is gone: the others learn of it from their own failed collective
    return false;
  }
}

}  // namespace

bool ProcessGroup::report_failure(const std::string& message) noexcept {
  return leave_in_store(*impl_->store, rank_key("failed", impl_->rank), message);
}

bool ProcessGroup::report_error(const std::string& message) noexcept {
  return leave_in_store(*impl_->store, rank_key("error", impl_->rank), message);
}

// ---------------------------------------------------------------------------------------------
// GradientReducer

struct GradientReducer::State {
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    int64_t waiting = 0;          // members whose gradient has not arrived
    at::Tensor flat;              // the members' gradients, concatenated, being summed
    c10::intrusive_ptr<c10d::Work> work;
  };
  ProcessGroup::Impl& group;
  std::vector<at::Tensor> parameters;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hooks;
  std::vector<size_t> bucket_of;
  std::vector<bool> arrived;
  std::vector<Bucket> buckets;
  size_t launched = 0;  // buckets [0, launched) have started, always in this order
  bool armed = false;
  std::mutex mutex;

  explicit State(ProcessGroup::Impl& g) : group(g) {}

  void reset() {
    std::fill(arrived.begin(), arrived.end(), false);
    for (Bucket& b : buckets) {
      b.waiting = static_cast<int64_t>(b.members.size());
      b.flat = at::Tensor();
      b.work.reset();
    }
    launched = 0;
  }

  void launch_next() {
    Bucket& bucket = buckets[launched++];
    std::vector<at::Tensor> pieces;
    for (size_t i : bucket.members) {
      at::Tensor& grad = parameters[i].mutable_grad();
      if (!grad.defined()) grad = at::zeros_like(parameters[i]);  // unused this step: contributes zeros
      pieces.push_back(grad.reshape({-1}));
    }
    bucket.flat = at::cat(pieces);
    std::vector<at::Tensor> one{bucket.flat};
    bucket.work = group.gloo->allreduce(one);
  }

  void gradient_arrived(size_t index) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed || arrived[index]) return;
    arrived[index] = true;
    --buckets[bucket_of[index]].waiting;
    while (launched < buckets.size() && buckets[launched].waiting == 0) launch_next();
  }
};

namespace {

// Runs after a parameter's gradient accumulator has added this pass's gradient to .grad.
class GradientArrived : public torch::autograd::FunctionPostHook {
 public:
  GradientArrived(GradientReducer::State* state, size_t index) : state_(state), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    state_->gradient_arrived(index_);
    return outputs;
  }

 private:
  GradientReducer::State* state_;
  size_t index_;
};

}  // namespace

GradientReducer::GradientReducer(ProcessGroup& group, std::vector<at::Tensor> parameters, int64_t bucket_bytes)
    : state_(std::make_unique<State>(*group.impl_)) {
  State& s = *state_;
  for (const at::Tensor& p : parameters)
    if (p.requires_grad()) s.parameters.push_back(p);
  s.bucket_of.resize(s.parameters.size());
  s.arrived.resize(s.parameters.size());
  int64_t bucket_size = 0;
  for (size_t k = s.parameters.size(); k-- > 0;) {
    const at::Tensor& p = s.parameters[k];
    const bool dtype_changes = !s.buckets.empty() && s.parameters[s.buckets.back().members.back()].scalar_type() != p.scalar_type();
    if (s.buckets.empty() || bucket_size >= bucket_bytes || dtype_changes) {
      s.buckets.emplace_back();
      bucket_size = 0;
    }
    s.buckets.back().members.push_back(k);
    s.bucket_of[k] = s.buckets.size() - 1;
    bucket_size += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (size_t k = 0; k < s.parameters.size(); ++k) {
    s.accumulators.push_back(torch::autograd::impl::grad_accumulator(s.parameters[k]));
    s.hooks.push_back(s.accumulators.back()->add_post_hook(std::make_unique<GradientArrived>(&s, k)));
  }
  s.reset();
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < state_->accumulators.size(); ++k) state_->accumulators[k]->del_post_hook(state_->hooks[k]);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->reset();
  state_->armed = true;
}

void GradientReducer::finish() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.armed = false;
  while (s.launched < s.buckets.size()) s.launch_next();
  for (State::Bucket& bucket : s.buckets) {
    s.group.wait(bucket.work, "gradient sum");
    int64_t offset = 0;
    for (size_t i : bucket.members) {
      at::Tensor& grad = s.parameters[i].mutable_grad();
      grad.copy_(bucket.flat.narrow(0, offset, grad.numel()).view_as(grad));
      offset += grad.numel();
    }
  }
  s.reset();
}

// ---------------------------------------------------------------------------------------------
// The local launcher

namespace {

std::atomic<int> stop_signal{0};
void remember_signal(int signal) { stop_signal = signal; }

pid_t spawn_worker(const std::vector<std::string>& argv, const std::map<std::string, std::string>& variables) {
  std::vector<std::string> environment;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    if (!variables.count(entry.substr(0, entry.find('=')))) environment.push_back(entry);
  }
  for (const auto& [name, value] : variables) environment.push_back(name + "=" + value);
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  for (const std::string& e : environment) envp.push_back(const_cast<char*>(e.c_str()));
  args.push_back(nullptr);
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int error = posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), envp.data());
  if (error != 0) throw std::runtime_error(fmt::format("cannot start '{}': {}", argv[0], std::strerror(error)));
  return pid;
}

// The workers of one run, from their start until the last has ended.
class LocalWorkers {
 public:
  LocalWorkers(const std::vector<std::string>& command, std::map<std::string, std::string> variables, int64_t nproc) {
    for (int64_t rank = 0; rank < nproc; ++rank) {
      variables["RANK"] = variables["LOCAL_RANK"] = std::to_string(rank);
      running_[spawn_worker(command, variables)] = rank;
    }
  }

  // Waits for every worker. After the first failure the others have timeout_s (and 5 s more) to
  // stop on their own before they are killed; an interrupt ends them all.
  std::vector<WorkerExit> wait(double timeout_s) {
    Clock::time_point deadline = Clock::time_point::max();  // when the workers still running are killed
    bool failed = false;
    while (!running_.empty()) {
      if (stop_signal != 0 && !interrupted_) {
        interrupted_ = true;
        signal_all(SIGTERM);
        deadline = Clock::now() + std::chrono::seconds(10);
      }
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid < 0 && errno != EINTR) break;
      if (pid > 0) {
        if (record(pid, exit_status_of(status)) && !failed) {
          failed = true;
          deadline = std::min(deadline, Clock::now() + to_milliseconds(timeout_s + 5));
        }
        continue;
      }
      if (Clock::now() > deadline) {
        kill_stragglers();
        deadline = Clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return exits_;
  }

  bool interrupted() const { return interrupted_; }

 private:
  // Whether the worker failed.
  bool record(pid_t pid, int status) {
    const int64_t rank = running_.at(pid);
    running_.erase(pid);
    exits_.push_back({rank, pid, status, ended_.count(pid) > 0, "", ""});
    return status != 0;
  }

  void signal_all(int signal) {
    for (const auto& [pid, rank] : running_) {
      kill(pid, signal);
      ended_.insert(pid);
    }
  }

  void kill_stragglers() {
    for (const auto& [pid, rank] : running_)
      std::cerr << fmt::format("local launcher: worker rank {} (pid {}) did not stop; killing it\n", rank, pid);
    signal_all(SIGKILL);
  }

  std::map<pid_t, int64_t> running_;  // pid -> rank
  std::set<pid_t> ended_;             // signalled by the launcher
  std::vector<WorkerExit> exits_;     // in the order they ended
  bool interrupted_ = false;
};

// Each failed worker's own failure and final error, as it left them in the store.
void read_failures(c10d::Store& store, std::vector<WorkerExit>& exits) {
  try {
    for (WorkerExit& e : exits)
      if (e.status != 0) {
        e.failure = left_in_store(store, "failed", e.rank);
        e.error = left_in_store(store, "error", e.rank);
      }
  } catch (const std::exception&) {  // the summary then says how each worker ended
  }
}

bool failed_on_its_own(const WorkerExit& e) {
  return e.status != 0 && (!e.failure.empty() || (e.status > 128 && !e.ended_by_launcher));
}

std::string own_failure(const WorkerExit& e) {
  if (!e.failure.empty()) return fmt::format("rank {} (pid {}) failed: {}", e.rank, e.pid, e.failure);
  return fmt::format("rank {} (pid {}) {}", e.rank, e.pid, describe_exit(e.status));
}

// "rank 2" or "ranks 0, 2, 3".
std::string rank_list(const std::vector<int64_t>& ranks) {
  return fmt::format("{} {}", ranks.size() == 1 ? "rank" : "ranks", fmt::join(ranks, ", "));
}

}  // namespace

std::string describe_failures(const std::vector<WorkerExit>& exits) {
  std::vector<std::string> clauses;
  std::vector<int64_t> causes, stopped;
  for (const WorkerExit& e : exits)
    if (failed_on_its_own(e)) {
      clauses.push_back(own_failure(e));
      causes.push_back(e.rank);
    }
  for (const WorkerExit& e : exits) {
    if (e.status == 0 || failed_on_its_own(e)) continue;
    if (causes.empty())
      clauses.push_back(own_failure(e) + (e.error.empty() ? " (its error is above)" : ": " + e.error));
    else
      stopped.push_back(e.rank);
  }
  std::sort(stopped.begin(), stopped.end());
  if (!stopped.empty())
    clauses.push_back(fmt::format("{} stopped because {} failed", rank_list(stopped), rank_list(causes)));
  return fmt::format("{}", fmt::join(clauses, "; "));
}

void run_local_workers(const std::vector<std::string>& argv, int64_t nproc, double timeout_s,
                       int64_t threads_per_worker) {
  if (argv.empty()) throw std::invalid_argument("run_local_workers: no command");
  if (nproc < 1) throw std::invalid_argument(fmt::format("run_local_workers: nproc is {}, expected >= 1", nproc));
  c10d::TCPStoreOptions options;
  options.port = 0;  // any free port
  options.isServer = true;
  options.waitWorkers = false;
  options.timeout = to_milliseconds(timeout_s);
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
  } catch (const std::exception& e) {
    throw DistributedError(fmt::format("cannot serve the rendezvous store on 127.0.0.1: {}", first_line(e.what())));
  }
  std::map<std::string, std::string> variables{{"WORLD_SIZE", std::to_string(nproc)},
                                               {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
                                               {"MASTER_ADDR", "127.0.0.1"},
                                               {"MASTER_PORT", std::to_string(store->getPort())},
                                               {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                               {"SPE_LOCAL_LAUNCHER", "1"},
                                               {"TORCHELASTIC_RESTART_COUNT", "0"}};
  for (const char* threads : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"})
    variables[threads] = std::to_string(threads_per_worker);

  struct sigaction action {};
  action.sa_handler = remember_signal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  LocalWorkers workers(argv, variables, nproc);
  std::vector<WorkerExit> exits = workers.wait(timeout_s);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (workers.interrupted())
    throw DistributedError(
        fmt::format("interrupted by signal {}: the {} workers were stopped", stop_signal.load(), nproc));
  c10d::PrefixStore attempt("/worker/attempt_0", store);
  read_failures(attempt, exits);
  const std::string failures = describe_failures(exits);
  if (!failures.empty())
    throw DistributedError(fmt::format("data-parallel training on {} processes failed: {}", nproc, failures));
}

}  // namespace spe::train
