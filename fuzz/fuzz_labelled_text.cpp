// Any bytes as a user's file of labelled texts (spe data text --file): the first byte picks JSON
// lines or CSV and one text field or a pair, the rest is the file. Only std::runtime_error may
// escape; every accepted record has its texts and a non-empty label.
#include "fuzz_support.h"
#include "spe/data/text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool csv = data[0] & 1, pairs = data[0] & 2;
  const std::string path = spe::fuzz::scratch_file(spe::fuzz::as_string(data + 1, size - 1), csv ? ".csv" : ".jsonl");
  const std::vector<std::string> fields = pairs ? std::vector<std::string>{"a", "b"} : std::vector<std::string>{"text"};
  try {
    for (const spe::data::TextExample& e : spe::data::read_labelled_file(path, fields, "label")) {
      spe::fuzz::require(e.texts.size() == fields.size(), "one text per field");
      spe::fuzz::require(!e.label.empty(), "a label");
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
