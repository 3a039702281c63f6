// Any bytes as an IDX image file (Fashion-MNIST's format), plain or gzipped. Only
// std::runtime_error may escape; an accepted file holds exactly as many values as its shape says.
#include "fuzz_support.h"
#include "spe/data/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spe::fuzz::scratch_file(spe::fuzz::as_string(data, size), ".idx");
  try {
    const spe::data::IdxArray array = spe::data::read_idx(path);
    uint64_t count = 1;
    for (int64_t side : array.shape) {
      spe::fuzz::require(side >= 0, "non-negative sides");
      count *= static_cast<uint64_t>(side);
    }
    spe::fuzz::require(count == array.values.size(), "values fill the shape");
  } catch (const std::runtime_error&) {
  }
  return 0;
}
