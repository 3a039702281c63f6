#pragma once
// A score: the notes of a MIDI file on a fixed grid of kStepsPerQuarter steps per quarter note
// (16th notes and 8th-note triplets are exact), with its tempo and time signature changes. The
// step between MIDI and tokens: score_from_midi quantises and cleans, midi_from_score writes.
#include <cstdint>
#include <vector>

#include "spe/midi/midi_file.h"

namespace spe::midi {

constexpr int kStepsPerQuarter = 12;
constexpr int kDrumProgram = 128;  // notes of MIDI channel 10
constexpr int kDrumChannel = 9;

struct Note {
  int64_t start = 0;     // grid steps from the beginning
  int64_t duration = 1;  // grid steps, >= 1
  int pitch = 60;        // 0..127 (drums: the instrument)
  int velocity = 64;     // 1..127
  int program = 0;       // General MIDI program 0..127, or kDrumProgram
  bool operator==(const Note& o) const {
    return start == o.start && duration == o.duration && pitch == o.pitch && velocity == o.velocity && program == o.program;
  }
};

struct TempoChange {
  int64_t position = 0;  // grid steps
  double bpm = 120.0;    // quarter notes per minute
};

struct TimeSignature {
  int64_t position = 0;  // grid steps
  int numerator = 4, denominator = 4;
};

struct Score {
  std::vector<Note> notes;  // sorted by (start, program, pitch); no two of one program and pitch overlap
  std::vector<TempoChange> tempos;
  std::vector<TimeSignature> time_signatures;
};

// Quantises a file onto the grid: note on/off pairs matched per (channel, pitch) first in first
// out (velocity 0 = off), each note with the program of its channel at its start (channel 10:
// drums), notes still sounding at the end closed there, durations at least one step; then notes
// of one program and pitch that overlap are cut at the next one's start, and exact repeats go.
// Tempo (meta 0x51) and time signature (0x58) changes from every track; at one position the last wins.
Score score_from_midi(const MidiFile& file);

// Puts a score in the form score_from_midi gives: notes sorted by (start, program, pitch), of one
// (program, pitch) struck twice at one start only the longest kept, overlapping ones cut at the
// next one's start; changes sorted by position, the last one kept at each position.
void normalise(Score& score);

// A format 1 file at 480 ticks per quarter: track 0 holds the tempo and time signatures, then one
// track per program in order of first appearance, drums on channel 10, the other programs on
// the other 15 channels (beyond 15 programs, channels are shared and a program change precedes
// each note whose channel last played another program).
MidiFile midi_from_score(const Score& score);

}  // namespace spe::midi
