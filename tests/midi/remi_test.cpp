// REMI tokens: the vocabulary, a hand-built score against its tokens written out by hand, every
// quantisation rule, and decoding of out-of-place and random tokens.
#include "spe/midi/remi.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <random>
#include <set>

namespace spe::midi {
namespace {

const RemiVocabulary kVocabulary;

std::vector<std::string> names(const std::vector<uint16_t>& tokens) {
  std::vector<std::string> out;
  for (uint16_t t : tokens) out.push_back(kVocabulary.token_name(t));
  return out;
}

std::vector<uint16_t> ids(const std::vector<std::string>& token_names) {
  std::vector<uint16_t> out;
  for (const std::string& n : token_names) {
    const int64_t id = kVocabulary.token_id(n);
    EXPECT_GE(id, 0) << n;
    out.push_back(static_cast<uint16_t>(id));
  }
  return out;
}

TEST(Remi, VocabularyNamesAreUniqueAndInvertible) {
  EXPECT_EQ(kVocabulary.size(), 4 + 36 + 288 + 32 + 129 + 128 + 16 + 56);
  std::set<std::string> seen;
  for (int64_t id = 0; id < kVocabulary.size(); ++id) {
    const std::string name = kVocabulary.token_name(id);
    EXPECT_TRUE(seen.insert(name).second) << name;
    EXPECT_EQ(kVocabulary.token_id(name), id);
  }
  EXPECT_EQ(kVocabulary.token_name(0), "PAD");
  EXPECT_EQ(kVocabulary.token_id("Pitch_128"), -1);
  EXPECT_THROW(kVocabulary.token_name(kVocabulary.size()), std::out_of_range);
}

// The name of the tempo bin of `bpm`, restated from the documented rule: 32 bins log-spaced
// over 40..250 BPM, nearest in log.
std::string tempo_name(double bpm) {
  const double bin = std::round(31.0 * std::log(bpm / 40.0) / std::log(250.0 / 40.0));
  return fmt::format("Tempo_{:.0f}", 40.0 * std::pow(250.0 / 40.0, bin / 31.0));
}

// Bar 0 in 3/4 (36 steps), bar 1 from step 36 in 6/8 (36 steps), an empty bar 2, a note in bar 3.
TEST(Remi, EncodesAScoreAsWrittenByHand) {
  Score s;
  s.time_signatures = {{0, 3, 4}, {30, 6, 8}};  // the 6/8 takes effect at the next bar start, 36
  s.tempos = {{0, 120.0}, {12, 121.0}, {40, 60.0}};  // 121 falls in the bin of 120: no token
  s.notes = {{0, 12, 60, 100, 0}, {0, 30, 64, 100, kDrumProgram}, {12, 1, 62, 1, 0}, {40, 500, 48, 127, 33},
             {110, 25, 50, 64, 0}};
  normalise(s);
  // velocities: bins of 8 (100 -> 101, 1 -> 5, 127 -> 125, 64 -> 61); durations: exact to 24,
  // 25 floors to 24, 500 clips to 384
  const std::vector<std::string> expected = {
      "BOS", "Bar", "TimeSig_3/4",
      "Position_0", tempo_name(120.0), "Program_0", "Pitch_60", "Velocity_101", "Duration_12",
      "Program_drums", "Pitch_64", "Velocity_101", "Duration_30",
      "Position_12", "Program_0", "Pitch_62", "Velocity_5", "Duration_1",
      "Bar", "TimeSig_6/8", "Position_4", tempo_name(60.0), "Program_33", "Pitch_48", "Velocity_125", "Duration_384",
      "Bar",
      "Bar", "Position_2", "Program_0", "Pitch_50", "Velocity_61", "Duration_24",
      "EOS"};
  EXPECT_EQ(names(kVocabulary.encode(s)), expected);
}

TEST(Remi, QuantisesAsDocumented) {
  auto encode_one = [](Note n, std::vector<TempoChange> tempos = {}, std::vector<TimeSignature> signatures = {}) {
    Score s;
    s.notes = {n};
    s.tempos = tempos;
    s.time_signatures = signatures;
    return names(kVocabulary.encode(s));
  };
  auto contains = [](const std::vector<std::string>& tokens, const std::string& name) {
    return std::find(tokens.begin(), tokens.end(), name) != tokens.end();
  };
  // velocity bins of 8: 1..8 -> 5, 9..16 -> 13, 127 -> 125
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 8, 0}), "Velocity_5"));
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 9, 0}), "Velocity_13"));
  // durations floor to the table: 26 -> 24, 27 -> 27, 50 -> 48, 100 -> 96, 200 -> 192
  for (auto [steps, name] : std::vector<std::pair<int64_t, std::string>>{
           {26, "Duration_24"}, {27, "Duration_27"}, {50, "Duration_48"}, {100, "Duration_96"}, {200, "Duration_192"}})
    EXPECT_TRUE(contains(encode_one({0, steps, 60, 64, 0}), name)) << steps;
  // tempos clamp to 40..250 and go to the nearest bin in log
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}, {{0, 10.0}}), "Tempo_40"));
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}, {{0, 1000.0}}), "Tempo_250"));
  // time signatures outside the set: 7/16 -> 7/8, 13/4 -> 12/4, 2/1 -> 2/2
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}, {}, {{0, 7, 16}}), "TimeSig_7/8"));
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}, {}, {{0, 13, 4}}), "TimeSig_12/4"));
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}, {}, {{0, 2, 1}}), "TimeSig_2/2"));
  // no time signature: 4/4
  EXPECT_TRUE(contains(encode_one({0, 1, 60, 64, 0}), "TimeSig_4/4"));
}

TEST(Remi, DecodingSkipsTokensOutOfPlace) {
  const RemiDecoding d = kVocabulary.decode(ids({"BOS", "Pitch_60", "Position_0", "Bar", "TimeSig_3/4", "Position_40",
                                                 "Position_35", "Velocity_5", "Program_1", "Pitch_61", "Velocity_13",
                                                 "Duration_2", "TimeSig_2/4", "Duration_3", "EOS", "Bar", "Position_0"}));
  // skipped: Pitch_60 and Position_0 (before any Bar), Position_40 (past a 3/4 bar), Velocity_5
  // (no pitch), TimeSig_2/4 (not right after Bar), Duration_3 (no velocity); EOS stops.
  EXPECT_EQ(d.skipped, 6);
  ASSERT_EQ(d.score.notes.size(), 1u);
  EXPECT_EQ(d.score.notes[0], (Note{35, 2, 61, 13, 1}));
  ASSERT_EQ(d.score.time_signatures.size(), 1u);
  EXPECT_EQ(d.score.time_signatures[0].numerator, 3);
}

TEST(Remi, DecodingRandomTokensNeverFails) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint16_t> tokens(rng() % 3000);
    for (auto& t : tokens) t = static_cast<uint16_t>(rng() % (kVocabulary.size() + 20));  // some past the end
    const RemiDecoding d = kVocabulary.decode(tokens);
    for (const Note& n : d.score.notes) {
      ASSERT_GE(n.duration, 1);
      ASSERT_TRUE(n.pitch >= 0 && n.pitch < 128 && n.velocity >= 1 && n.velocity <= 127);
    }
    // What decodes, encodes; and decoding that again gives the same notes.
    const std::vector<uint16_t> again = kVocabulary.encode(d.score);
    EXPECT_EQ(kVocabulary.decode(again).score.notes, d.score.notes);
  }
}

}  // namespace
}  // namespace spe::midi
