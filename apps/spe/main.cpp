// spe: relative positional encoding for transformers with linear complexity.
#include <c10/util/Exception.h>

#include <iostream>

#include "commands.h"
#include "spe/train/distributed.h"
#include "spe/util/memory.h"

int main(int argc, char** argv) {
  spe::retain_freed_memory();
  CLI::App app;
  spe::cli::add_commands(app, std::vector<std::string>(argv, argv + argc));
  try {
    app.parse(argc, argv);
    if (app.get_subcommands().empty()) {
      std::cerr << app.help() << "\nerror: a subcommand is required (data, train, eval, compare, config, plot, midi, generate, extrapolate, info, kernel, bench)\n";
      return 1;
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const spe::train::ReportedToLauncher&) {
    return 1;  // the launcher's summary quotes it
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
