// `spe compare`: a grid of runs on one task (attentions x positional encodings x seeds), each with
// the same configuration and time budget, summarised as a markdown table and a plot. Runs live in
// their own folders under --out; a grid that was interrupted continues where it stopped.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "spe/train/distributed.h"
#include "spe/train/trainer.h"
#include "spe/util/files.h"

namespace spe::cli {
namespace {

namespace fs = std::filesystem;

struct CompareArgs {
  std::string task = "listops", config, out, png;
  std::vector<std::string> positional{"none", "sinusoidal", "rotary", "sine_spe"};
  std::vector<std::string> attention{"linear"};
  std::vector<std::string> overrides;
  int64_t seeds = 2, first_seed = 1;  // seeds first_seed..seeds
  double budget_minutes = 0;
};

// One run's outcome, kept in its folder as summary.json.
struct RunResult {
  std::string attention, positional;
  int64_t seed = 0, steps = 0, parameters = 0;
  double seconds = 0, test_accuracy = 0, test_loss = 0, valid_accuracy = 0, tokens_per_s = 0, peak_rss_mib = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RunResult, attention, positional, seed, steps, parameters, seconds, test_accuracy,
                                   test_loss, valid_accuracy, tokens_per_s, peak_rss_mib)

fs::path run_folder(const CompareArgs& a, const std::string& attention, const std::string& positional, int64_t seed) {
  return fs::path(a.out) / fmt::format("{}-{}-seed{}", attention, positional, seed);
}

// One cell of the grid: trained (or resumed) unless its summary says it is complete.
RunResult run_cell(const CompareArgs& a, const std::string& config_path, const std::string& attention,
                   const std::string& positional, int64_t seed) {
  std::vector<std::string> overrides = a.overrides;
  overrides.push_back("model.attention.kind=" + attention);
  overrides.push_back("model.positional.kind=" + positional);
  overrides.push_back("train.seed=" + std::to_string(seed));
  const train::Config config = train::load_config(config_path, overrides);
  const fs::path dir = run_folder(a, attention, positional, seed);
  const fs::path summary_path = dir / "summary.json";
  if (fs::exists(summary_path)) {
    std::cerr << fmt::format("{}: complete, not run again\n", dir.string());
    return nlohmann::json::parse(read_file(summary_path.string())).get<RunResult>();
  }
  std::cerr << fmt::format("== {} attention, {} positional encoding, seed {}\n", attention, positional, seed);
  fs::create_directories(a.out);
  train::TrainerOptions options;
  options.out_dir = dir.string();
  options.resume = fs::exists(dir / "checkpoint.pt");
  options.time_budget_s = a.budget_minutes * 60;
  const train::TrainSummary trained = train::train(config, options);
  const auto [best, test] = train::evaluate_checkpoint((dir / "best.pt").string(), "test");
  const RunResult r{attention,     positional,      seed,          trained.steps,         trained.parameters,
                    trained.seconds, test.accuracy, test.loss,     best.state.best_metric, trained.tokens_per_s,
                    trained.peak_rss_mib};
  write_file_atomically(summary_path.string(), nlohmann::json(r).dump(2) + "\n");
  return r;
}

double mean(const std::vector<double>& values) {
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

std::string mean_and_spread(const std::vector<double>& values) {
  const double m = mean(values);
  if (values.size() < 2) return fmt::format("{:.3f}", m);
  double squares = 0;
  for (double v : values) squares += (v - m) * (v - m);
  return fmt::format("{:.3f} ± {:.3f}", m, std::sqrt(squares / static_cast<double>(values.size() - 1)));
}

std::string markdown_table(const CompareArgs& a, const std::vector<RunResult>& results, const std::string& command) {
  std::string table = fmt::format(
      "Task `{}`; {} per row; mean ± sample standard deviation over seeds; test accuracy of the checkpoint with "
      "the best validation accuracy; training tokens/s counts real tokens over the whole run (evaluations included); "
      "peak memory is the process's resident peak.{}\n\n`{}`\n\n"
      "| attention | positional | test accuracy | best validation accuracy | steps per run | minutes per run | "
      "training tokens/s | peak memory (MiB) | parameters |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      a.task,
      a.first_seed == a.seeds ? fmt::format("seed {}", a.seeds) : fmt::format("seeds {}-{}", a.first_seed, a.seeds),
      a.budget_minutes > 0 ? fmt::format(" Budget: {} minutes per run.", a.budget_minutes) : "",
      command);
  for (size_t i = 0; i < results.size();) {
    std::vector<double> test, valid, steps, minutes, tokens_per_s, peak;
    size_t j = i;
    for (; j < results.size() && results[j].attention == results[i].attention &&
           results[j].positional == results[i].positional;
         ++j) {
      test.push_back(results[j].test_accuracy);
      valid.push_back(results[j].valid_accuracy);
      steps.push_back(static_cast<double>(results[j].steps));
      minutes.push_back(results[j].seconds / 60);
      tokens_per_s.push_back(results[j].tokens_per_s);
      peak.push_back(results[j].peak_rss_mib);
    }
    table += fmt::format("| {} | {} | {} | {} | {:.0f} | {:.1f} | {:.0f} | {:.0f} | {} |\n", results[i].attention,
                         results[i].positional, mean_and_spread(test), mean_and_spread(valid), mean(steps), mean(minutes),
                         mean(tokens_per_s), *std::max_element(peak.begin(), peak.end()), results[i].parameters);
    i = j;
  }
  return table;
}

}  // namespace

void add_compare_command(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  auto* sub = app.add_subcommand("compare", "train a grid of positional encodings x attentions x seeds; table and plot");
  sub->add_option("--task", a->task, "the task (its data from `spe data TASK`)")->capture_default_str();
  sub->add_option("--config", a->config, "base configuration (default configs/TASK/compare.yaml)");
  sub->add_option("--out", a->out, "folder of the runs, results.md and curves.png")->required();
  sub->add_option("--pe", a->positional, "positional encodings, comma-separated")->delimiter(',')->capture_default_str();
  sub->add_option("--attention", a->attention, "attentions, comma-separated")->delimiter(',')->capture_default_str();
  sub->add_option("--seeds", a->seeds, "seeds per cell (1, 2, ...)")->check(positive_integer())->capture_default_str();
  sub->add_option("--first-seed", a->first_seed,
                  "first seed of each cell: seeds first..--seeds run (a grid split across machines or processes)")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--budget", a->budget_minutes, "minutes of training per run (0: train.steps only)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--set", a->overrides, "override a key of the base configuration (repeatable)")->take_all();
  sub->callback([a] {
    if (const auto why = train::launched_as_worker())
      throw std::runtime_error(fmt::format(
          "spe compare trains its runs one after another in one process, so it cannot be one of a launcher's "
          "workers ({}): run `spe compare` once, without torchrun; to train one configuration data-parallel, run "
          "`spe train` under torchrun or `spe train --nproc N`",
          *why));
    if (a->first_seed > a->seeds)
      throw std::invalid_argument(fmt::format("--first-seed is {}, beyond --seeds {}: no seed would run", a->first_seed, a->seeds));
    const std::string config_path = a->config.empty() ? "configs/" + a->task + "/compare.yaml" : a->config;
    for (const auto& p : a->positional) parse_choice("--pe", p, nn::kPositionalKinds);
    for (const auto& k : a->attention) parse_choice("--attention", k, nn::kAttentionKinds);
    train::load_config(config_path, a->overrides);  // a bad base configuration fails before any run
    std::string command = fmt::format("spe compare --task {} --config {} --out {} --pe {} --attention {} --seeds {}{}{}",
                                      a->task, config_path, a->out, fmt::join(a->positional, ","),
                                      fmt::join(a->attention, ","), a->seeds,
                                      a->first_seed > 1 ? fmt::format(" --first-seed {}", a->first_seed) : "",
                                      a->budget_minutes > 0 ? fmt::format(" --budget {}", a->budget_minutes) : "");
    for (const auto& o : a->overrides) command += " --set " + o;
    std::vector<RunResult> results;
    std::vector<std::string> metrics;
    for (const auto& attention : a->attention)
      for (const auto& positional : a->positional) {
        if (positional == "shaw" && attention != "softmax") {
          std::cerr << fmt::format("skipping shaw with {} attention: Shaw positions act inside softmax attention\n", attention);
          continue;
        }
        for (int64_t seed = a->first_seed; seed <= a->seeds; ++seed) {
          results.push_back(run_cell(*a, config_path, attention, positional, seed));
          metrics.push_back((run_folder(*a, attention, positional, seed) / "metrics.jsonl").string());
        }
      }
    const std::string table = markdown_table(*a, results, command);
    write_file_atomically((fs::path(a->out) / "results.md").string(), table);
    const std::string png = (fs::path(a->out) / "curves.png").string();
    plot_learning_curves(metrics, png, fmt::format("{}: validation curves", a->task), true);
    std::cout << table << "\nwrote " << (fs::path(a->out) / "results.md").string() << " and " << png << "\n";
  });
}

}  // namespace spe::cli
