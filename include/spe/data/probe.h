#pragma once
// Position probes: byte-level classification tasks that only position solves. Every example is
// `length` random filler bytes with markers written into it; the label depends on where the
// markers are, never on which fillers surround them, so a model without position information
// stays at the task's chance level.
//   order:     one 'a' and one 'b' at distinct random places; label 1 when 'a' comes first.
//              Chance 1/2.
//   offset:    an 'a' followed by a 'b' at distance 1 (label 1) or 2 to 4 (label 0), half of
//              each. Chance 1/2. Tells apart neighbouring lags, which a smooth kernel cannot.
//   retrieval: filler digits '0'..'9' and one '#'; the label is the digit `distance` positions
//              after the '#'. Chance 1/10. Copying from one exact relative offset.
// Tokens are bytes + 1 (vocabulary 257, 0 padding), as in `spe data text`, so every byte-level
// configuration reads a probe as it is.
#include <cstdint>
#include <string>

#include "spe/data/dataset.h"
#include "spe/util/choices.h"

namespace spe::data {

enum class ProbeKind { order, offset, retrieval };
inline constexpr Choice<ProbeKind> kProbeKinds[] = {
    {"order", ProbeKind::order}, {"offset", ProbeKind::offset}, {"retrieval", ProbeKind::retrieval}};

struct ProbeOptions {
  ProbeKind kind = ProbeKind::order;
  int64_t length = 128;   // bytes per example
  int64_t distance = 3;   // retrieval: the digit this many positions after the '#'
};

// Throws std::invalid_argument naming the option that makes the task impossible.
void check_probe_options(const ProbeOptions& options);

// The accuracy of a model that ignores position: 1 / number of equally likely classes.
double probe_chance(ProbeKind kind);

// `count` examples for one split, each split from its own stream of `seed`; the same
// (options, seed, split) give the same file.
Dataset make_probe_dataset(const ProbeOptions& options, int64_t count, uint64_t seed, const std::string& split);

}  // namespace spe::data
