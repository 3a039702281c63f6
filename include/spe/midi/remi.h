#pragma once
// REMI tokens (Huang & Yang 2020), with programs for several instruments (as in REMI+): a score
// becomes, bar after bar,
//   Bar [TimeSig] { Position [Tempo] { Program Pitch Velocity Duration } }
// between BOS and EOS. Ids (all < 65536, stored as uint16):
//   0 PAD, 1 BOS, 2 EOS, 3 Bar,
//   TimeSig_n/d   n in 1..12, d in {2, 4, 8}               (36)
//   Position_p    p in 0..287, grid steps into the bar      (288: the longest bar is 12/2)
//   Tempo_i       32 bins log-spaced over 40..250 BPM       (32)
//   Program_p     p in 0..127, then Program_drums           (129)
//   Pitch_p       p in 0..127                               (128)
//   Velocity_v    v = 8 i + 5, i in 0..15 (bins of 8)       (16)
//   Duration_s    steps: 1..24, then by 3 to 48, by 6 to 96, by 12 to 192, by 24 to 384   (56)
// Quantisation (the only loss, documented in docs/MIDI.md): the 12-steps-per-quarter grid of
// score.h; time signatures outside the set map to the nearest (denominator clamped to 2..8,
// numerator to 1..12) and take effect at the first bar start at or after their position;
// tempos to the nearest bin (in log); velocities to their bin; durations down to the longest
// table entry not above them (so no two notes start overlapping), at most 384 steps.
#include <cstdint>
#include <string>
#include <vector>

#include "spe/midi/score.h"

namespace spe::midi {

struct RemiDecoding {
  Score score;
  int64_t skipped = 0;  // tokens that made no sense where they stood (e.g. Pitch before any Program)
};

// Decoding's rules, as a state machine that reads one token at a time: which tokens decode reads
// where they stand (it skips the others) and what each one read does. RemiVocabulary::decode is
// this machine fed every token, so a language model that draws only tokens allowed() allows
// writes sequences of which decode skips none. Decode reads
//   PAD, BOS        always (and ignores them)    EOS  always: the end, nothing is read after it
//   Bar             always (up to kMaxBars bars of the longest signature)
//   TimeSig         right after a Bar (or after another TimeSig)
//   Position_p      once a bar is open, when p is inside it (earlier positions than the last too)
//   Tempo, Program  after a Position of the current bar
//   Pitch           after a Program (since the last Bar or Position)
//   Velocity        after the Pitch of a note (not yet completed by a Duration)
//   Duration        after a Velocity: the note is complete; its program stays for another Pitch
class RemiGrammar {
 public:
  // Whether decode reads `token` here rather than skipping it.
  bool allows(int64_t token) const;
  // (V) allows(id) for every id of the vocabulary: O(V), however many tokens were read.
  std::vector<bool> allowed() const;
  // Reads `token`: returns false and changes nothing when allows(token) is false. With a score,
  // what the token completes goes into it: a note (at Duration), a tempo change, a time
  // signature (the first, then each change).
  bool push(int64_t token, Score* score = nullptr);
  bool ended() const { return ended_; }  // EOS was read

 private:
  TimeSignature signature_;                 // 4/4 until a TimeSig
  bool signature_read_ = false;             // a TimeSig was read (the score records the first)
  int64_t bar_start_ = -1, position_ = -1;  // -1: before the first Bar / Position of the bar
  int program_ = -1, pitch_ = -1, velocity_ = -1;
  bool bar_opened_ = false;  // a Bar was read and no Position since: a TimeSig may follow
  bool ended_ = false;
};

class RemiVocabulary {
 public:
  int64_t size() const;
  int64_t pad() const { return 0; }
  int64_t bos() const { return 1; }
  int64_t eos() const { return 2; }
  int64_t bar() const { return 3; }
  // "Pitch_60", "TimeSig_3/4", ...; throws std::out_of_range for an id not in the vocabulary.
  std::string token_name(int64_t id) const;
  // The id of a name, or -1.
  int64_t token_id(const std::string& name) const;
  // BOS, the score's tokens, EOS. Throws MidiError for a score longer than kMaxBars bars.
  std::vector<uint16_t> encode(const Score& score) const;
  // Never fails: tokens that make no sense in their place (RemiGrammar) are skipped and counted;
  // decoding stops at EOS.
  RemiDecoding decode(const std::vector<uint16_t>& tokens) const;
  // One line per token family: first id, count, meaning.
  std::string describe() const;

  static constexpr int64_t kMaxBars = 100000;
};

}  // namespace spe::midi
