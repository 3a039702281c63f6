// Position probes: each label is what the markers' places say (re-derived here from the tokens),
// classes are balanced within the bounds of the sample size, files are reproducible, and bad
// options are named.
#include "spe/data/probe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "spe/data/text.h"
#include "support/errors.h"

namespace spe::data {
namespace {

uint16_t token(char c) { return static_cast<uint16_t>(static_cast<unsigned char>(c) + 1); }

std::vector<int64_t> places(const TokenSpan& s, char c) {
  std::vector<int64_t> found;
  for (size_t i = 0; i < s.size; ++i)
    if (s.data[i] == token(c)) found.push_back(static_cast<int64_t>(i));
  return found;
}

// The label from the tokens alone, as a reader of the task's definition would compute it.
int32_t label_from_tokens(const TokenSpan& s, const ProbeOptions& o) {
  if (o.kind == ProbeKind::retrieval) {
    const auto marker = places(s, '#');
    EXPECT_EQ(marker.size(), 1u);
    const uint16_t digit = s.data[marker.at(0) + o.distance];
    EXPECT_TRUE(digit >= token('0') && digit <= token('9'));
    return digit - token('0');
  }
  const auto a = places(s, 'a'), b = places(s, 'b');
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(b.size(), 1u);
  if (o.kind == ProbeKind::order) return a.at(0) < b.at(0) ? 1 : 0;
  const int64_t gap = b.at(0) - a.at(0);
  EXPECT_TRUE(gap >= 1 && gap <= 4) << gap;
  return gap == 1 ? 1 : 0;
}

TEST(Probe, LabelsAreWhatTheMarkersPlacesSayAndClassesAreBalanced) {
  const int64_t count = 4000;
  for (const auto& kind : kProbeKinds) {
    SCOPED_TRACE(kind.name);
    const ProbeOptions o{kind.value, 40, 5};
    const Dataset d = make_probe_dataset(o, count, 3, "train");
    EXPECT_EQ(d.info().vocab_size, kByteVocabSize);
    EXPECT_EQ(d.info().num_classes, kind.value == ProbeKind::retrieval ? 10 : 2);
    EXPECT_NEAR(1.0 / d.info().num_classes, probe_chance(kind.value), 1e-12);
    std::vector<int64_t> histogram(static_cast<size_t>(d.info().num_classes));
    for (int64_t i = 0; i < d.size(); ++i) {
      const TokenSpan s = d.sequence(i);
      ASSERT_EQ(s.size, 40u);
      ASSERT_EQ(d.label(i), label_from_tokens(s, o)) << "example " << i;
      ++histogram[static_cast<size_t>(d.label(i))];
    }
    // Each class is drawn with probability p = chance: its count is within 5 binomial sd of
    // count p (a false alarm about once in 1.7 million).
    const double p = probe_chance(kind.value), sd = std::sqrt(count * p * (1 - p));
    for (int64_t c : histogram) EXPECT_LT(std::abs(c - count * p), 5 * sd) << c;
  }
}

TEST(Probe, OrderMarkersCoverEveryPlace) {
  const ProbeOptions o{ProbeKind::order, 8, 3};
  const Dataset d = make_probe_dataset(o, 2000, 1, "train");
  std::vector<int> seen_a(8), seen_b(8);
  for (int64_t i = 0; i < d.size(); ++i) {
    ++seen_a[static_cast<size_t>(places(d.sequence(i), 'a').at(0))];
    ++seen_b[static_cast<size_t>(places(d.sequence(i), 'b').at(0))];
  }
  // 2000 draws over 8 places: each about 250 times; fewer than 150 is 6.8 sd below.
  for (int p = 0; p < 8; ++p) {
    EXPECT_GT(seen_a[p], 150) << "a at " << p;
    EXPECT_GT(seen_b[p], 150) << "b at " << p;
  }
}

TEST(Probe, SameSeedSameFileOtherSplitOtherExamples) {
  const ProbeOptions o{ProbeKind::offset, 32, 3};
  EXPECT_EQ(make_probe_dataset(o, 50, 7, "train").serialize(), make_probe_dataset(o, 50, 7, "train").serialize());
  EXPECT_NE(make_probe_dataset(o, 50, 7, "train").serialize(), make_probe_dataset(o, 50, 7, "test").serialize());
  EXPECT_NE(make_probe_dataset(o, 50, 7, "train").serialize(), make_probe_dataset(o, 50, 8, "train").serialize());
}

TEST(Probe, ImpossibleOptionsAreNamed) {
  EXPECT_ERROR_CONTAINS(make_probe_dataset({ProbeKind::offset, 4, 3}, 10, 1, "train"),
                        "probe offset: length is 4, expected 5 to 65535");
  EXPECT_ERROR_CONTAINS(make_probe_dataset({ProbeKind::retrieval, 5, 5}, 10, 1, "train"),
                        "probe retrieval: length is 5, expected 6 to 65535 for this kind and distance");
  EXPECT_ERROR_CONTAINS(make_probe_dataset({ProbeKind::retrieval, 50, 0}, 10, 1, "train"),
                        "probe retrieval: distance is 0, expected >= 1");
  EXPECT_ERROR_CONTAINS(make_probe_dataset({ProbeKind::order, 1, 3}, 10, 1, "train"),
                        "probe order: length is 1, expected 2 to 65535");
  EXPECT_ERROR_CONTAINS(make_probe_dataset({ProbeKind::order, 16, 3}, -1, 1, "train"), "-1 examples requested");
}

}  // namespace
}  // namespace spe::data
