#pragma once
// Standard MIDI Files (SMF formats 0, 1 and 2): a reader that survives any input and a writer.
// The reader checks every length against the bytes present before using it, never recurses,
// and allocates at most a small multiple of the input: a corrupt or foreign file is a MidiError
// naming the file, the byte offset and what is wrong (fuzzed: fuzz/fuzz_midi.cpp). It reads the
// deviations that players accept as docs/MIDI.md lists them: running status after meta and sysex
// events, tracks without an end of track, a file cut short, fewer tracks than the header declares.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace spe::midi {

class MidiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct MidiEvent {
  int64_t tick = 0;           // absolute time, in the file's ticks
  uint8_t status = 0;         // 0x80-0xEF channel message (low nibble: channel), 0xF0 / 0xF7 sysex, 0xFF meta
  uint8_t meta_type = 0;      // meta events: 0x51 tempo, 0x58 time signature, 0x2F end of track, ...
  std::vector<uint8_t> data;  // channel message: its 1 or 2 data bytes; sysex and meta: the payload

  bool operator==(const MidiEvent& other) const {
    return tick == other.tick && status == other.status && meta_type == other.meta_type && data == other.data;
  }
  bool is_meta(uint8_t type) const { return status == 0xFF && meta_type == type; }
};

struct MidiTrack {
  // In file order, ticks non-decreasing, ending with end of track (read_midi adds one at the time
  // of the last event to a track that lacks it).
  std::vector<MidiEvent> events;
};

struct MidiFile {
  int format = 1;                // 0: one track, 1: simultaneous tracks, 2: independent sequences
  int ticks_per_quarter = 480;   // metrical time division (SMPTE division is refused)
  std::vector<MidiTrack> tracks;
};

constexpr uint8_t kMetaEndOfTrack = 0x2F, kMetaTempo = 0x51, kMetaTimeSignature = 0x58;

// Parses the bytes of a file; `name` goes into every error message.
MidiFile read_midi(const std::string& bytes, const std::string& name);
// The bytes of a file (no running status; an end of track is added to tracks that lack one).
std::string write_midi(const MidiFile& file);

MidiFile load_midi(const std::string& path);
void save_midi(const std::string& path, const MidiFile& file);  // atomically

}  // namespace spe::midi
