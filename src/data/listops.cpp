#include "spe/data/listops.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "spe/util/hash.h"

namespace spe::data {
namespace {

constexpr const char* kOperatorNames[] = {"[MIN", "[MAX", "[MED", "[SM"};

int apply_operator(uint16_t op, std::vector<int> args) {
  switch (op) {
    case kListOpsMin:
      return *std::min_element(args.begin(), args.end());
    case kListOpsMax:
      return *std::max_element(args.begin(), args.end());
    case kListOpsMed: {
      std::sort(args.begin(), args.end());
      const size_t n = args.size();
      return n % 2 == 1 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
    }
    case kListOpsSum:
      return std::accumulate(args.begin(), args.end(), 0) % 10;
  }
  throw std::logic_error("apply_operator: not an operator");
}

// Writes a random expression of about `budget` tokens; returns its value.
class Generator {
 public:
  Generator(const ListOpsOptions& options, std::mt19937_64& rng) : options_(options), rng_(rng) {}

  int expression(int64_t budget, int64_t depth, std::vector<uint16_t>& out) {
    // An operator needs its bracket pair and at least min_args arguments.
    if (depth >= options_.max_depth || budget < options_.min_args + 2) {
      const int digit = uniform(0, 9);
      out.push_back(static_cast<uint16_t>(kListOpsDigit0 + digit));
      return digit;
    }
    const uint16_t op = static_cast<uint16_t>(kListOpsMin + uniform(0, 3));
    const int64_t args = uniform(options_.min_args, std::min(options_.max_args, budget - 2));
    // Share the budget among the arguments with uniformly random proportions (Dirichlet(1)).
    std::vector<double> weights(static_cast<size_t>(args));
    std::exponential_distribution<double> exponential(1.0);
    for (double& w : weights) w = exponential(rng_);
    const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
    out.push_back(op);
    std::vector<int> values;
    for (double w : weights) {
      const int64_t share = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(budget - 2) * w / total));
      values.push_back(expression(share, depth + 1, out));
    }
    out.push_back(kListOpsClose);
    return apply_operator(op, std::move(values));
  }

 private:
  int64_t uniform(int64_t low, int64_t high) { return std::uniform_int_distribution<int64_t>(low, high)(rng_); }
  const ListOpsOptions& options_;
  std::mt19937_64& rng_;
};

}  // namespace

void check_listops_options(const ListOpsOptions& o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("listops: " + what); };
  if (o.min_args < 1 || o.max_args < o.min_args)
    fail(fmt::format("arguments per operator must satisfy 1 <= min ({}) <= max ({})", o.min_args, o.max_args));
  if (o.max_depth < 1) fail(fmt::format("max_depth is {}, expected at least 1", o.max_depth));
  if (o.min_length < o.min_args + 2 || o.max_length < o.min_length || o.max_length > 1000000)
    fail(fmt::format("length range [{}, {}] must satisfy {} <= min <= max <= 1000000", o.min_length, o.max_length,
                     o.min_args + 2));
  // The longest expression the depth and arity allow: max_args^depth leaves plus brackets.
  double capacity = 1;
  for (int64_t d = 0; d < o.max_depth && capacity < 1e7; ++d) capacity = capacity * static_cast<double>(o.max_args) + 2;
  if (capacity < static_cast<double>(o.min_length))
    fail(fmt::format("depth {} and {} arguments cannot reach {} tokens", o.max_depth, o.max_args, o.min_length));
}

ListOpsExample generate_listops(const ListOpsOptions& options, std::mt19937_64& rng) {
  check_listops_options(options);
  Generator generator(options, rng);
  std::uniform_int_distribution<int64_t> target(options.min_length, options.max_length);
  for (int attempt = 0; attempt < 10000; ++attempt) {
    ListOpsExample example;
    example.value = generator.expression(target(rng), 0, example.tokens);
    const auto length = static_cast<int64_t>(example.tokens.size());
    if (length >= options.min_length && length <= options.max_length) return example;
  }
  throw std::runtime_error(fmt::format("listops: no expression of {} to {} tokens in 10000 attempts; widen the range",
                                       options.min_length, options.max_length));
}

int evaluate_listops(const uint16_t* tokens, size_t length) {
  struct Frame {
    uint16_t op;
    std::vector<int> args;
  };
  std::vector<Frame> stack;
  int result = -1;
  for (size_t i = 0; i < length; ++i) {
    const uint16_t t = tokens[i];
    if (result >= 0)
      throw std::invalid_argument(fmt::format("listops: token {} follows a complete expression", i));
    if (t >= kListOpsDigit0 && t < kListOpsDigit0 + 10) {
      const int digit = t - kListOpsDigit0;
      if (stack.empty())
        result = digit;
      else
        stack.back().args.push_back(digit);
    } else if (t >= kListOpsMin && t <= kListOpsSum) {
      stack.push_back({t, {}});
    } else if (t == kListOpsClose) {
      if (stack.empty()) throw std::invalid_argument(fmt::format("listops: token {} closes a bracket never opened", i));
      if (stack.back().args.empty())
        throw std::invalid_argument(fmt::format("listops: token {} closes an operator without arguments", i));
      const int value = apply_operator(stack.back().op, std::move(stack.back().args));
      stack.pop_back();
      if (stack.empty())
        result = value;
      else
        stack.back().args.push_back(value);
    } else {
      throw std::invalid_argument(fmt::format("listops: token {} has id {}, not a ListOps symbol", i, t));
    }
  }
  if (!stack.empty()) throw std::invalid_argument(fmt::format("listops: {} brackets left open", stack.size()));
  if (result < 0) throw std::invalid_argument("listops: empty expression");
  return result;
}

std::string listops_to_string(const uint16_t* tokens, size_t length) {
  std::string text;
  for (size_t i = 0; i < length; ++i) {
    if (i > 0) text += ' ';
    const uint16_t t = tokens[i];
    if (t >= kListOpsDigit0 && t < kListOpsDigit0 + 10)
      text += static_cast<char>('0' + (t - kListOpsDigit0));
    else if (t >= kListOpsMin && t <= kListOpsSum)
      text += kOperatorNames[t - kListOpsMin];
    else if (t == kListOpsClose)
      text += ']';
    else
      text += fmt::format("<{}>", t);
  }
  return text;
}

Dataset make_listops_dataset(const ListOpsOptions& options, int64_t count, uint64_t seed, const std::string& split) {
  check_listops_options(options);
  if (count < 0) throw std::invalid_argument(fmt::format("listops: {} examples requested", count));
  DatasetInfo info;
  info.task = "listops";
  info.split = split;
  info.vocab_size = kListOpsVocabSize;
  info.num_classes = 10;
  for (int d = 0; d < 10; ++d) info.class_names.push_back(std::to_string(d));
  info.source = fmt::format("spe listops generator: seed {}, lengths {}-{}, depth <= {}, {}-{} arguments", seed,
                            options.min_length, options.max_length, options.max_depth, options.min_args, options.max_args);
  Dataset dataset(info);
  // Each split draws from its own stream, so no split's examples depend on another's count.
  std::mt19937_64 rng = seeded_engine(seed, split);
  for (int64_t i = 0; i < count; ++i) {
    ListOpsExample example = generate_listops(options, rng);
    dataset.add(example.value, {example.tokens});
  }
  return dataset;
}

}  // namespace spe::data
