// Any bytes as the command line of `spe` (arguments separated by NUL bytes), parsed by the very
// command line `spe` builds, stopped after parsing and validation, before any command runs. Only
// CLI11's ParseError and std::exception may escape; nothing may crash or hang.
#include <c10/util/Exception.h>

#include "commands.h"
#include "fuzz_support.h"

namespace {

struct Parsed {};

// CLI11 calls pre_callback() once everything is parsed and validated, before the first callback.
class ParseOnly : public CLI::App {
  void pre_callback() override { throw Parsed{}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"spe"};
  const std::string input = spe::fuzz::as_string(data, size);
  for (size_t start = 0; start <= input.size();) {
    const size_t end = std::min(input.find('\0', start), input.size());
    args.push_back(input.substr(start, end - start));
    start = end + 1;
  }
  ParseOnly app;
  spe::cli::add_commands(app, args);
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const Parsed&) {
  } catch (const CLI::ParseError&) {
  } catch (const c10::Error&) {
  } catch (const std::exception&) {
  }
  return 0;
}
