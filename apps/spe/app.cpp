// The `spe` command line: the global options and every subcommand (main.cpp parses and reports;
// fuzz/fuzz_cli.cpp parses without running them).
#include <cstdlib>
#include <thread>

#include "commands.h"
#include "spe/util/threads.h"
#include "spe/version.h"

namespace spe::cli {

void add_commands(CLI::App& app, const std::vector<std::string>& command_line) {
  app.description("spe: stochastic positional encoding (SPE) and linear attention on LibTorch");
  app.set_version_flag("--version", [] { return std::string("spe ") + spe::version() + "\n" + installation_text(); });
  app.require_subcommand(0, 1);
  // The cores, or OMP_NUM_THREADS when a launcher (torchrun, spe train --nproc) sets it per worker.
  // Without either, training chooses from the work of its step (spe::choose_step_threads).
  auto threads = std::make_shared<int>(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const bool omp_set = omp && std::atoi(omp) > 0;
  if (omp_set) *threads = std::atoi(omp);
  auto* option = app.add_option("--threads", *threads,
                                "threads for LibTorch, spe kernels and OpenBLAS alike (per worker); without it spe "
                                "chooses each pool from the work (docs/BENCHMARKS.md, \"Threads\")")
                     ->check(positive_integer())
                     ->check(CLI::Range(1, kMaxThreads))
                     ->capture_default_str();
  app.parse_complete_callback([threads, option, omp_set] {
    spe::set_num_threads(*threads);
    if (option->count() == 0 && !omp_set) spe::set_automatic_threads(*threads);
  });
  add_info_command(app);
  add_kernel_command(app);
  add_bench_command(app);
  add_data_command(app);
  add_train_commands(app, command_line);
  add_plot_command(app);
  add_compare_command(app);
  add_midi_command(app);
  add_generate_command(app);
  add_extrapolate_command(app);
}

}  // namespace spe::cli
