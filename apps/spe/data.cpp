// `spe data <task>`: prepares a task's train/valid/test splits in spe's dataset format.
#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "commands.h"
#include "spe/data/listops.h"

namespace spe::cli {
namespace {

struct SplitCounts {
  int64_t train = 2000, valid = 200, test = 200;
};

void make_folder(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw std::runtime_error(fmt::format("cannot create the folder '{}': {}", dir, std::strerror(errno)));
}

// One line per split: examples, token lengths and the label histogram.
void report(const data::Dataset& d, const std::string& path) {
  int64_t shortest = INT64_MAX, longest = 0;
  std::vector<int64_t> histogram(static_cast<size_t>(std::max<int64_t>(d.info().num_classes, 1)));
  for (int64_t i = 0; i < d.size(); ++i) {
    for (int64_t f = 0; f < d.info().fields; ++f) {
      shortest = std::min<int64_t>(shortest, d.sequence(i, f).size);
      longest = std::max<int64_t>(longest, d.sequence(i, f).size);
    }
    ++histogram[static_cast<size_t>(d.label(i))];
  }
  std::cout << fmt::format("{{\"split\": \"{}\", \"path\": \"{}\", \"examples\": {}, \"tokens\": {}, \"min_length\": {}, "
                           "\"max_length\": {}, \"labels\": [{}]}}\n",
                           d.info().split, path, d.size(), d.total_tokens(), d.size() ? shortest : 0, longest,
                           fmt::join(histogram, ", "));
}

void add_listops(CLI::App& data_command) {
  auto options = std::make_shared<data::ListOpsOptions>();
  auto counts = std::make_shared<SplitCounts>();
  auto out = std::make_shared<std::string>("data/listops");
  auto seed = std::make_shared<uint64_t>(1);
  auto* sub = data_command.add_subcommand("listops", "generate ListOps expressions labelled with their value");
  sub->add_option("--out", *out, "output folder (train.bin, valid.bin, test.bin)")->capture_default_str();
  sub->add_option("--train", counts->train, "training examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--valid", counts->valid, "validation examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--test", counts->test, "test examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--min-length", options->min_length, "shortest expression in tokens")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-length", options->max_length, "longest expression in tokens")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-depth", options->max_depth, "deepest operator nesting")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-args", options->max_args, "most arguments per operator")->check(positive_integer())->capture_default_str();
  sub->add_option("--seed", *seed, "random seed: the same seed gives the same files")->capture_default_str();
  sub->callback([=] {
    data::check_listops_options(*options);
    make_folder(*out);
    for (const auto& [split, count] : {std::pair<std::string, int64_t>{"train", counts->train},
                                       {"valid", counts->valid}, {"test", counts->test}}) {
      const data::Dataset d = data::make_listops_dataset(*options, count, *seed, split);
      const std::string path = data::split_path(*out, split);
      d.save(path);
      report(d, path);
    }
  });
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto* data_command = app.add_subcommand("data", "prepare a task's dataset (train/valid/test splits)");
  data_command->require_subcommand(1);
  add_listops(*data_command);
}

}  // namespace spe::cli
