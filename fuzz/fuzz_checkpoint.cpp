// Any bytes as a checkpoint file: spe's envelope (magic, format version, payload length,
// checksum) around LibTorch's archive. Only std::exception may escape; nothing may crash.
//
// The payload itself is not fuzzed behind a valid checksum: LibTorch 1.13's archive reader
// (TorchScript's loader) crashes on crafted archives (docs/FUZZING.md), which only a file made to
// pass the checksum reaches; a damaged file is refused before LibTorch sees it.
#include <c10/util/Exception.h>

#include "fuzz_support.h"
#include "spe/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spe::fuzz::scratch_file(spe::fuzz::as_string(data, size), ".pt");
  try {
    spe::train::read_checkpoint_header(path);
  } catch (const std::exception&) {
  }
  return 0;
}
