#pragma once
// The subcommands of the `spe` CLI: each adds itself to the app and runs from its callback.
// Errors are thrown (std::exception or c10::Error) and reported by main.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <string>
#include <vector>

namespace spe::cli {

// More intra-op threads than this is a typing error, not a machine (each one is a real thread).
constexpr int kMaxThreads = 1024;

// The whole command line on `app`: global options and every subcommand, each running from its
// callback. The options write into state that the callbacks own: keep them. command_line: this
// process's arguments (spe train --nproc restarts itself with them).
void add_commands(CLI::App& app, const std::vector<std::string>& command_line);

// A command-line value that must be a positive integer; the error names the value given.
inline CLI::Validator positive_integer() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        try {
          size_t used = 0;
          if (std::stoll(value, &used) > 0 && used == value.size()) return "";
        } catch (const std::exception&) {
        }
        return "must be a positive integer, got " + value;
      },
      "POSITIVE");
}

// A command-line value that must be a finite number in [low, high] (CLI::Range lets nan
// through); the error names the value given.
inline CLI::Validator number_in(double low, double high) {
  return CLI::Validator(
      [low, high](std::string& value) -> std::string {
        try {
          size_t used = 0;
          const double x = std::stod(value, &used);
          if (used == value.size() && x >= low && x <= high) return "";
        } catch (const std::exception&) {
        }
        return fmt::format("must be a number in [{}, {}], got {}", low, high, value);
      },
      fmt::format("NUMBER in [{}, {}]", low, high));
}

// Where this `spe` runs from: "prefix: DIR" when installed (DIR/bin/spe), else "build tree: DIR",
// then the ops library Python should load (torch.ops.load_library), one per line.
std::string installation_text();

void add_info_command(CLI::App& app);
void add_kernel_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_data_command(CLI::App& app);
// train, eval, config; command_line is this process's arguments, for `spe train --nproc N` to
// start its workers with.
void add_train_commands(CLI::App& app, const std::vector<std::string>& command_line);
void add_plot_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_midi_command(CLI::App& app);  // midi encode, decode, vocab
void add_extrapolate_command(CLI::App& app);
void add_generate_command(CLI::App& app);

// Loss and accuracy against steps for each run's metrics.jsonl (its folder names it), as a PNG.
void plot_learning_curves(const std::vector<std::string>& metrics_paths, const std::string& png,
                          const std::string& title, bool validation_only);
// The decode and layer scenarios, added to `spe bench` by add_bench_command.
void add_bench_layer_scenarios(CLI::App& bench);
// `spe bench generate`: a language model's generation, recurrent against recomputing the prefix.
void add_bench_generate_scenario(CLI::App& bench);
// `spe bench train`: whole training steps of a configured model, tokens/s and peak memory.
void add_bench_train_scenario(CLI::App& bench);

}  // namespace spe::cli
