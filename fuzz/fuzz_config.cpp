// Any bytes as a run's configuration: YAML, then after a NUL byte one `--set key=value` override
// per line. Only std::invalid_argument may escape; an accepted configuration writes out as YAML
// that reads back to the same configuration.
#include "fuzz_support.h"
#include "spe/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input = spe::fuzz::as_string(data, size);
  const size_t nul = input.find('\0');
  const std::string yaml = input.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    size_t start = nul + 1;
    while (start <= input.size()) {
      const size_t end = std::min(input.find('\n', start), input.size());
      overrides.push_back(input.substr(start, end - start));
      start = end + 1;
    }
  }
  spe::train::Config config;
  try {
    config = spe::train::parse_config(yaml, overrides, "input");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  const std::string resolved = spe::train::to_yaml(config);
  spe::fuzz::require(spe::train::to_yaml(spe::train::parse_config(resolved, {}, "resolved")) == resolved,
                     "the resolved configuration reads back the same");
  return 0;
}
