// `spe train`, `spe eval` and `spe config`: training runs from a YAML configuration.
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "commands.h"
#include "spe/train/checkpoint.h"
#include "spe/train/distributed.h"
#include "spe/train/trainer.h"

namespace spe::cli {
namespace {

struct ConfigArgs {
  std::string config;
  std::vector<std::string> overrides;
};

void add_config_options(CLI::App& sub, ConfigArgs& a) {
  sub.add_option("--config", a.config, "YAML configuration (configs/<task>/*.yaml); defaults when omitted");
  sub.add_option("--set", a.overrides, "override one key, e.g. --set model.layers=4 (repeatable)")->take_all();
}

// This program re-executed without `--nproc N` and `--threads N`: what each local worker runs (its
// threads come from OMP_NUM_THREADS, its share of --threads). Its path is this process's own
// executable, whatever command_line[0] says (a name found in PATH, or a relative path).
std::vector<std::string> worker_command(const std::vector<std::string>& command_line) {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error)
    throw std::runtime_error("--nproc: cannot find this program to start its workers (/proc/self/exe: " +
                             error.message() + ")");
  std::vector<std::string> out{self.string()};
  for (size_t i = 1; i < command_line.size(); ++i) {
    const std::string& word = command_line[i];
    if (word == "--nproc" || word == "--threads") {
      ++i;
      continue;
    }
    if (word.rfind("--nproc=", 0) != 0 && word.rfind("--threads=", 0) != 0) out.push_back(word);
  }
  return out;
}

void add_train(CLI::App& app, const std::vector<std::string>& command_line) {
  auto a = std::make_shared<ConfigArgs>();
  auto options = std::make_shared<train::TrainerOptions>();
  auto nproc = std::make_shared<int64_t>(0);
  auto* sub = app.add_subcommand("train", "train a model from a configuration");
  add_config_options(*sub, *a);
  sub->add_option("--out", options->out_dir, "output folder: config, metrics, checkpoints")->required();
  sub->add_flag("--resume", options->resume, "continue the run in --out from its checkpoint");
  sub->add_option("--until-step", options->until_step, "stop after this step (checkpointed; resume later)")
      ->check(positive_integer());
  auto budget_minutes = std::make_shared<double>(0.0);
  sub->add_option("--budget", *budget_minutes, "stop after this many minutes (evaluated and checkpointed)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("!--no-progress", options->progress, "no progress line on stderr (messages stay)");
  sub->add_option("--nproc", *nproc, "train data-parallel on N local processes, sharing --threads (torchrun's variables are set for each)")
      ->check(positive_integer());
  sub->add_option("--timeout", options->timeout_s,
                  "data-parallel: seconds a rank waits for the others before it stops with an error")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->callback([a, options, budget_minutes, nproc, command_line] {
    if (*nproc > 0) {
      if (train::launch_environment())
        throw std::runtime_error("--nproc starts its own workers: do not combine it with a launcher's WORLD_SIZE");
      const int64_t threads = std::max<int64_t>(1, at::get_num_threads() / *nproc);
      train::run_local_workers(worker_command(command_line), *nproc, options->timeout_s, threads);
      return;
    }
    options->launch = train::launch_environment();
    options->time_budget_s = *budget_minutes * 60;
    // A resumed run without --config continues with the configuration it saved.
    const std::string path = a->config.empty() && options->resume ? options->out_dir + "/config.yaml" : a->config;
    if (options->resume && access(path.c_str(), F_OK) != 0)
      throw std::runtime_error(fmt::format("--resume: '{}' holds no run to continue (no {})", options->out_dir, path));
    train::train(train::load_config(path, a->overrides), *options);
  });
}

void add_eval(CLI::App& app) {
  struct Args {
    std::string checkpoint, split = "test", data_dir;
    int64_t batches = 0;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("eval", "evaluate a checkpoint on a split; prints JSON");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint.pt or best.pt of a run")->required();
  sub->add_option("--split", a->split, "train, valid or test")->check(CLI::IsMember({"train", "valid", "test"}))->capture_default_str();
  sub->add_option("--data", a->data_dir, "data folder (default: the run's data.dir)");
  sub->add_option("--batches", a->batches, "evaluate at most this many batches (0: all)")->capture_default_str();
  sub->callback([a] {
    const auto [checkpoint, r] = train::evaluate_checkpoint(a->checkpoint, a->split, a->data_dir, a->batches);
    std::cout << fmt::format(
        "{{\"checkpoint\": \"{}\", \"step\": {}, \"split\": \"{}\", \"loss\": {:.6g}, \"accuracy\": {:.6g}, "
        "\"predictions\": {}}}\n",
        a->checkpoint, checkpoint.state.step, a->split, r.loss, r.accuracy, r.predictions);
  });
}

void add_config(CLI::App& app) {
  auto a = std::make_shared<ConfigArgs>();
  auto* sub = app.add_subcommand("config", "print a configuration resolved: every key with its value");
  add_config_options(*sub, *a);
  sub->callback([a] { std::cout << train::to_yaml(train::load_config(a->config, a->overrides)); });
}

}  // namespace

void add_train_commands(CLI::App& app, const std::vector<std::string>& command_line) {
  add_train(app, command_line);
  add_eval(app);
  add_config(app);
}

}  // namespace spe::cli
