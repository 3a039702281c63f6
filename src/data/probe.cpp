#include "spe/data/probe.h"

#include <fmt/format.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "spe/data/text.h"
#include "spe/util/hash.h"

namespace spe::data {
namespace {

constexpr int64_t kLongestOffsetGap = 4;  // offset: far markers are 2 .. 4 apart

uint16_t byte_token(char c) { return static_cast<uint16_t>(static_cast<unsigned char>(c) + 1); }

int64_t uniform(std::mt19937_64& rng, int64_t low, int64_t high) {  // inclusive
  return std::uniform_int_distribution<int64_t>(low, high)(rng);
}

// Random bytes from `alphabet`, `length` of them.
std::vector<uint16_t> fillers(const std::string& alphabet, int64_t length, std::mt19937_64& rng) {
  std::vector<uint16_t> tokens(static_cast<size_t>(length));
  const int64_t last = static_cast<int64_t>(alphabet.size()) - 1;
  for (auto& t : tokens) t = byte_token(alphabet[static_cast<size_t>(uniform(rng, 0, last))]);
  return tokens;
}

const std::string kLetterFillers = "cdefghijklmnopqrstuvwxyz";  // every letter but the markers
const std::string kDigits = "0123456789";

struct Example {
  std::vector<uint16_t> tokens;
  int32_t label;
};

Example order_example(int64_t length, std::mt19937_64& rng) {
  Example e{fillers(kLetterFillers, length, rng), 0};
  const int64_t a = uniform(rng, 0, length - 1);
  int64_t b = uniform(rng, 0, length - 2);
  if (b >= a) ++b;  // distinct from a, uniform over the others
  e.tokens[static_cast<size_t>(a)] = byte_token('a');
  e.tokens[static_cast<size_t>(b)] = byte_token('b');
  e.label = a < b ? 1 : 0;
  return e;
}

Example offset_example(int64_t length, std::mt19937_64& rng) {
  Example e{fillers(kLetterFillers, length, rng), static_cast<int32_t>(uniform(rng, 0, 1))};
  const int64_t gap = e.label == 1 ? 1 : uniform(rng, 2, kLongestOffsetGap);
  const int64_t a = uniform(rng, 0, length - 1 - gap);
  e.tokens[static_cast<size_t>(a)] = byte_token('a');
  e.tokens[static_cast<size_t>(a + gap)] = byte_token('b');
  return e;
}

Example retrieval_example(int64_t length, int64_t distance, std::mt19937_64& rng) {
  Example e{fillers(kDigits, length, rng), 0};
  const int64_t marker = uniform(rng, 0, length - 1 - distance);
  e.tokens[static_cast<size_t>(marker)] = byte_token('#');
  e.label = e.tokens[static_cast<size_t>(marker + distance)] - byte_token('0');
  return e;
}

}  // namespace

void check_probe_options(const ProbeOptions& o) {
  const int64_t shortest = o.kind == ProbeKind::order       ? 2
                           : o.kind == ProbeKind::offset    ? kLongestOffsetGap + 1
                                                            : o.distance + 1;
  if (o.kind == ProbeKind::retrieval && o.distance < 1)
    throw std::invalid_argument(fmt::format("probe retrieval: distance is {}, expected >= 1", o.distance));
  if (o.length < shortest || o.length > 65535)
    throw std::invalid_argument(fmt::format("probe {}: length is {}, expected {} to 65535 for this kind{}",
                                            choice_name(o.kind, kProbeKinds), o.length, shortest,
                                            o.kind == ProbeKind::retrieval ? " and distance" : ""));
}

double probe_chance(ProbeKind kind) { return kind == ProbeKind::retrieval ? 0.1 : 0.5; }

Dataset make_probe_dataset(const ProbeOptions& o, int64_t count, uint64_t seed, const std::string& split) {
  check_probe_options(o);
  if (count < 0) throw std::invalid_argument(fmt::format("probe: {} examples requested", count));
  DatasetInfo info;
  info.task = fmt::format("probe_{}", choice_name(o.kind, kProbeKinds));
  info.split = split;
  info.vocab_size = kByteVocabSize;
  if (o.kind == ProbeKind::order) info.class_names = {"b_first", "a_first"};
  if (o.kind == ProbeKind::offset) info.class_names = {"far", "adjacent"};
  if (o.kind == ProbeKind::retrieval)
    for (char digit : kDigits) info.class_names.emplace_back(1, digit);
  info.num_classes = static_cast<int64_t>(info.class_names.size());
  info.source = fmt::format("spe probe generator: kind {}, length {}{}, seed {}", choice_name(o.kind, kProbeKinds),
                            o.length, o.kind == ProbeKind::retrieval ? fmt::format(", distance {}", o.distance) : "",
                            seed);
  Dataset dataset(info);
  std::mt19937_64 rng = seeded_engine(seed, "probe/" + split);
  for (int64_t i = 0; i < count; ++i) {
    const Example e = o.kind == ProbeKind::order    ? order_example(o.length, rng)
                      : o.kind == ProbeKind::offset ? offset_example(o.length, rng)
                                                    : retrieval_example(o.length, o.distance, rng);
    dataset.add(e.label, {e.tokens});
  }
  return dataset;
}

}  // namespace spe::data
