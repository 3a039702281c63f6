// REMI tokens: the vocabulary, a hand-built score against its tokens written out by hand, every
// quantisation rule, decoding of out-of-place and random tokens, and the grammar: its mask is
// exactly what decoding reads (checked against decoding itself), and what it allows decodes
// without a skip.
#include "spe/midi/remi.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
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


std::vector<std::string> allowed_names(const RemiGrammar& grammar) {
  std::vector<std::string> out;
  const std::vector<bool> allowed = grammar.allowed();
  for (size_t id = 0; id < allowed.size(); ++id)
    if (allowed[id]) out.push_back(kVocabulary.token_name(static_cast<int64_t>(id)));
  return out;
}

RemiGrammar after(const std::vector<std::string>& token_names) {
  RemiGrammar grammar;
  for (uint16_t id : ids(token_names)) EXPECT_TRUE(grammar.push(id)) << kVocabulary.token_name(id);
  return grammar;
}

TEST(RemiGrammar, AllowsWhatTheRulesSay) {
  EXPECT_EQ(allowed_names(RemiGrammar()), (std::vector<std::string>{"PAD", "BOS", "EOS", "Bar"}));
  // After Bar: a time signature, or any position of a 4/4 bar (48 steps).
  std::vector<std::string> names = allowed_names(after({"BOS", "Bar"}));
  EXPECT_EQ(names.size(), 4u + 36 + 48);
  EXPECT_EQ(names.back(), "Position_47");
  // In 3/4 (36 steps), at a position: positions inside the bar, tempos and programs.
  names = allowed_names(after({"BOS", "Bar", "TimeSig_3/4", "Position_30"}));
  EXPECT_EQ(names.size(), 4u + 36 + 32 + 129);
  EXPECT_EQ(std::count(names.begin(), names.end(), "TimeSig_3/4"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "Position_36"), 0);
  // A note in progress: only its next part (besides what is always allowed and a new position, tempo, program).
  const std::vector<std::string> note = {"BOS", "Bar", "Position_0", "Program_3", "Pitch_60"};
  names = allowed_names(after(note));
  EXPECT_EQ(std::count(names.begin(), names.end(), "Velocity_61"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "Duration_4"), 0);
  std::vector<std::string> longer = note;
  longer.push_back("Velocity_61");
  names = allowed_names(after(longer));
  EXPECT_EQ(std::count(names.begin(), names.end(), "Duration_4"), 1);
  // After EOS nothing is read, and ids outside the vocabulary never are.
  RemiGrammar ended = after({"BOS", "Bar", "EOS"});
  EXPECT_TRUE(ended.ended());
  EXPECT_TRUE(allowed_names(ended).empty());
  EXPECT_FALSE(ended.push(kVocabulary.bar()));
  EXPECT_FALSE(RemiGrammar().allows(kVocabulary.size()));
  EXPECT_FALSE(RemiGrammar().allows(-1));
}

// A token a grammar in this state allows, never EOS, drawn family first (so that the few ids of a
// TimeSig are drawn as often as the many of a Position); half the time from the last family
// allowed, which carries a note on (Position, Program, Pitch, Velocity, Duration, Pitch, ...).
uint16_t allowed_token(const RemiGrammar& grammar, std::mt19937_64& rng) {
  static const std::vector<std::string> families = [] {  // of each id: its name up to '_'
    std::vector<std::string> out;
    for (int64_t id = 0; id < kVocabulary.size(); ++id) {
      const std::string name = kVocabulary.token_name(id);
      out.push_back(name.substr(0, name.find('_')));
    }
    return out;
  }();
  std::vector<std::vector<uint16_t>> by_family;
  const std::vector<bool> allowed = grammar.allowed();
  for (size_t id = 0; id < allowed.size(); ++id) {
    if (!allowed[id] || static_cast<int64_t>(id) == kVocabulary.eos()) continue;
    if (by_family.empty() || families[id] != families[by_family.back().back()]) by_family.emplace_back();
    by_family.back().push_back(static_cast<uint16_t>(id));
  }
  const std::vector<uint16_t>& ids = rng() % 2 ? by_family.back() : by_family[rng() % by_family.size()];
  return ids[rng() % ids.size()];
}

// Prefixes mixing allowed tokens (to reach every state: notes, time signatures, late positions)
// with any ids, misplaced ones and some past the vocabulary (which must leave the state alone).
std::vector<uint16_t> random_prefix(size_t length, std::mt19937_64& rng) {
  RemiGrammar grammar;
  std::vector<uint16_t> tokens;
  while (tokens.size() < length) {
    uint16_t token = rng() % 4 == 0 ? static_cast<uint16_t>(rng() % (kVocabulary.size() + 8)) : allowed_token(grammar, rng);
    if (token == kVocabulary.eos()) continue;
    grammar.push(token);
    tokens.push_back(token);
  }
  return tokens;
}

// The slow, obvious oracle: decoding reads `token` after `prefix` when appending it adds no skip
// to the prefix's own `skipped`.
bool decode_reads(const std::vector<uint16_t>& prefix, int64_t skipped, uint16_t token) {
  std::vector<uint16_t> longer = prefix;
  longer.push_back(token);
  return kVocabulary.decode(longer).skipped == skipped;
}

TEST(RemiGrammar, MaskIsExactlyWhatDecodingReads) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 10; ++trial) {
    const std::vector<uint16_t> sequence = random_prefix(100, rng);
    RemiGrammar grammar;  // fed one token at a time, as generation feeds it
    for (size_t t = 0; t <= sequence.size(); ++t) {
      const std::vector<uint16_t> prefix(sequence.begin(), sequence.begin() + static_cast<std::ptrdiff_t>(t));
      const int64_t skipped = kVocabulary.decode(prefix).skipped;
      const std::vector<bool> allowed = grammar.allowed();
      ASSERT_EQ(static_cast<int64_t>(allowed.size()), kVocabulary.size());
      for (int64_t id = 0; id < kVocabulary.size(); ++id)
        ASSERT_EQ(allowed[static_cast<size_t>(id)], decode_reads(prefix, skipped, static_cast<uint16_t>(id)))
            << kVocabulary.token_name(id) << " after " << t << " tokens of trial " << trial << ", the last "
            << (t ? kVocabulary.token_name(prefix.back()) : "none");
      if (t < sequence.size()) {
        EXPECT_EQ(grammar.push(sequence[t]), decode_reads(prefix, skipped, sequence[t]));
      }
    }
  }
}

TEST(RemiGrammar, SequencesDrawnFromTheMaskDecodeWithoutASkip) {
  std::mt19937_64 rng(11);
  int64_t notes = 0;
  for (int trial = 0; trial < 100; ++trial) {
    RemiGrammar grammar;
    std::vector<uint16_t> tokens{static_cast<uint16_t>(kVocabulary.bos())};
    grammar.push(tokens.back());
    const size_t length = 1 + rng() % 1000;
    while (tokens.size() < length) {
      tokens.push_back(allowed_token(grammar, rng));
      ASSERT_TRUE(grammar.push(tokens.back()));
    }
    tokens.push_back(static_cast<uint16_t>(kVocabulary.eos()));
    ASSERT_TRUE(grammar.allows(tokens.back()));
    const RemiDecoding d = kVocabulary.decode(tokens);
    ASSERT_EQ(d.skipped, 0) << "trial " << trial;
    notes += static_cast<int64_t>(d.score.notes.size());
  }
  EXPECT_GT(notes, 2000);  // the draws reach whole notes, not only bars and positions
}

TEST(RemiGrammar, AllowsEveryTokenOfAnEncodedScore) {
  Score s;
  s.time_signatures = {{0, 3, 4}, {36, 6, 8}};
  s.tempos = {{0, 120.0}, {40, 60.0}};
  s.notes = {{0, 12, 60, 100, 0}, {0, 30, 64, 100, kDrumProgram}, {40, 500, 48, 127, 33}, {110, 25, 50, 64, 0}};
  normalise(s);
  RemiGrammar grammar;
  for (uint16_t token : kVocabulary.encode(s)) EXPECT_TRUE(grammar.push(token)) << kVocabulary.token_name(token);
  EXPECT_TRUE(grammar.ended());
}

}  // namespace
}  // namespace spe::midi
