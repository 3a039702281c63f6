// spe: relative positional encoding for transformers with linear complexity.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "commands.h"
#include "spe/version.h"

int main(int argc, char** argv) {
  CLI::App app{"spe: stochastic positional encoding (SPE) and linear attention on LibTorch"};
  app.set_version_flag("--version", std::string("spe ") + spe::version());
  app.require_subcommand(0, 1);
  // The cores, or OMP_NUM_THREADS when a launcher (torchrun, spe train --nproc) sets it per worker.
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0) threads = std::atoi(omp);
  app.add_option("--threads", threads, "intra-op threads for LibTorch and spe kernels (per worker)")
      ->check(spe::cli::positive_integer())
      ->capture_default_str();
  app.parse_complete_callback([&] { at::set_num_threads(threads); });
  spe::cli::add_info_command(app);
  spe::cli::add_kernel_command(app);
  spe::cli::add_bench_command(app);
  spe::cli::add_data_command(app);
  spe::cli::add_train_commands(app, std::vector<std::string>(argv, argv + argc));
  spe::cli::add_plot_command(app);
  spe::cli::add_compare_command(app);
  spe::cli::add_midi_command(app);
  spe::cli::add_generate_command(app);
  spe::cli::add_extrapolate_command(app);
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::cerr << app.help() << "\nerror: a subcommand is required (data, train, eval, compare, config, plot, midi, generate, extrapolate, info, kernel, bench)\n";
      return 1;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
