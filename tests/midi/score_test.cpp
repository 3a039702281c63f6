// Scores from MIDI: quantisation onto the 12-steps-per-quarter grid, note pairing, programs,
// drums, overlaps and repeats, tempo and time signatures, each against values worked out by
// hand; and writing a score then reading it back gives it again.
#include "spe/midi/score.h"

#include <gtest/gtest.h>

#include "midi_support.h"

namespace spe::midi {
namespace {

using testing::bytes;
using testing::kEndOfTrack;
using testing::smf;

// At 96 ticks per quarter a grid step is 8 ticks.
TEST(Score, QuantisesPairsAndAssignsPrograms) {
  const std::string conductor = bytes({0x00, 0xFF, 0x51, 0x03, 0x09, 0x27, 0xC0,    // 600000 us: 100 BPM
                                       0x00, 0xFF, 0x58, 0x04, 3, 2, 24, 8,         // 3/4
                                       0x60, 0xFF, 0x58, 0x04, 6, 3, 24, 8}) +      // tick 96: 6/8
                                kEndOfTrack;
  const std::string notes = bytes({0x00, 0xC1, 40,              // channel 1: program 40
                                   0x03, 0x91, 60, 100,         // tick 3 -> step 0 (3/8 rounds to 0)
                                   0x01, 0x91, 60, 90,          // tick 4 -> step 1 (4/8 = 0.5 rounds up): same key again
                                   0x08, 0x81, 60, 0,           // tick 12: closes the first (FIFO) -> end step 2 (1.5 up)
                                   0x00, 0x99, 36, 127,         // drums at tick 12 -> step 2
                                   0x0C, 0x91, 60, 0,           // tick 24 (step 3): velocity 0 closes the second
                                   0x00, 0x99, 36, 0,           // drum off at step 3
                                   0x00, 0x92, 70, 50}) +       // channel 2, never closed: ends at the last tick
                            bytes({0x48, 0xFF, 0x01, 0x01, 'x'}) + kEndOfTrack;  // tick 96: the last event
  const Score s = score_from_midi(read_midi(smf(1, 96, {conductor, notes}), "hand"));
  // (start, duration, pitch, velocity, program), sorted by start, program, pitch; the first
  // pitch-60 note (0..2) overlaps the second (1..3) and is cut at 1.
  const std::vector<Note> expected = {{0, 1, 60, 100, 40}, {1, 2, 60, 90, 40}, {2, 1, 36, 127, kDrumProgram}, {3, 9, 70, 50, 0}};
  EXPECT_EQ(s.notes, expected);
  ASSERT_EQ(s.tempos.size(), 1u);
  EXPECT_EQ(s.tempos[0].position, 0);
  EXPECT_DOUBLE_EQ(s.tempos[0].bpm, 100.0);
  ASSERT_EQ(s.time_signatures.size(), 2u);
  EXPECT_EQ(s.time_signatures[0].numerator, 3);
  EXPECT_EQ(s.time_signatures[0].denominator, 4);
  EXPECT_EQ(s.time_signatures[1].position, 12);
  EXPECT_EQ(s.time_signatures[1].denominator, 8);
}

TEST(Score, KeepsTheLongestOfRepeatedStrikesAndTheLastChangeAtAPosition) {
  Score s;
  s.notes = {{4, 2, 60, 80, 0}, {4, 6, 60, 70, 0}, {0, 1, 61, 80, 0}};
  s.tempos = {{0, 100.0}, {0, 90.0}};
  normalise(s);
  const std::vector<Note> expected = {{0, 1, 61, 80, 0}, {4, 6, 60, 70, 0}};
  EXPECT_EQ(s.notes, expected);
  ASSERT_EQ(s.tempos.size(), 1u);
  EXPECT_EQ(s.tempos[0].bpm, 90.0);
}

// Seventeen melodic programs (more than 15 channels) and drums survive a write and a read.
TEST(Score, WritingAndReadingGivesTheScoreBack) {
  Score s;
  for (int p = 0; p < 17; ++p) s.notes.push_back({p * 3, 2, 40 + p, 10 + p, p * 7});
  s.notes.push_back({5, 1, 38, 100, kDrumProgram});
  s.notes.push_back({50, 24, 40, 64, 0});
  s.tempos = {{0, 120.0}, {30, 75.0}};
  s.time_signatures = {{0, 7, 8}};
  normalise(s);
  const MidiFile file = midi_from_score(s);
  EXPECT_EQ(file.ticks_per_quarter, 480);
  EXPECT_EQ(file.tracks.size(), 1u + 18u);  // conductor + one per program
  const Score back = score_from_midi(read_midi(write_midi(file), "written"));
  EXPECT_EQ(back.notes, s.notes);
  ASSERT_EQ(back.tempos.size(), 2u);
  EXPECT_NEAR(back.tempos[1].bpm, 75.0, 1e-3);
  ASSERT_EQ(back.time_signatures.size(), 1u);
  EXPECT_EQ(back.time_signatures[0].numerator, 7);
  EXPECT_EQ(back.time_signatures[0].denominator, 8);
}

}  // namespace
}  // namespace spe::midi
