// Any bytes as an spe dataset file (spe data's .bin): the input is the file without its last 8
// bytes, and the target appends the right checksum, so that the fuzzer reaches the checks behind
// it (a checksum mismatch alone is covered by the damaged-file tests). Only std::runtime_error
// may escape; an accepted file must hold what its header promises and write back the same.
#include "fuzz_support.h"
#include "spe/data/dataset.h"
#include "spe/util/hash.h"

namespace {

void check_accepted(const spe::data::Dataset& dataset) {
  using spe::fuzz::require;
  const spe::data::DatasetInfo& info = dataset.info();
  int64_t tokens = 0;
  for (int64_t e = 0; e < dataset.size(); ++e) {
    require(dataset.label(e) >= 0 && (info.num_classes == 0 || dataset.label(e) < info.num_classes), "label in range");
    for (int64_t f = 0; f < info.fields; ++f) {
      const spe::data::TokenSpan span = dataset.sequence(e, f);
      for (size_t i = 0; i < span.size; ++i) require(span.data[i] < info.vocab_size, "token in the vocabulary");
      tokens += static_cast<int64_t>(span.size);
    }
  }
  require(tokens == dataset.total_tokens(), "sequences cover the tokens");
  const std::string written = dataset.serialize();
  require(spe::data::Dataset::deserialize(written, "rewritten").serialize() == written, "rewrites the same");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes = spe::fuzz::as_string(data, size);
  const uint64_t checksum = spe::fnv1a(bytes);
  bytes.append(reinterpret_cast<const char*>(&checksum), sizeof checksum);
  try {
    check_accepted(spe::data::Dataset::deserialize(bytes, "input"));
  } catch (const std::runtime_error&) {
  }
  return 0;
}
