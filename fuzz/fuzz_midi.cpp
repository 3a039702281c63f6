// Any bytes as a MIDI file: read, and whatever reads goes through scores and tokens and back to
// a file that must read again. Only MidiError may escape the reader; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "spe/midi/midi_file.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spe::midi;
  static const RemiVocabulary vocabulary;
  MidiFile file;
  try {
    file = read_midi(std::string(reinterpret_cast<const char*>(data), size), "input");
  } catch (const MidiError&) {
    return 0;
  }
  // What was read writes back to the same events.
  if (!(read_midi(write_midi(file), "rewritten").tracks.size() == file.tracks.size())) std::abort();
  try {
    const std::vector<uint16_t> tokens = vocabulary.encode(score_from_midi(file));
    const Score decoded = vocabulary.decode(tokens).score;
    read_midi(write_midi(midi_from_score(decoded)), "decoded");
  } catch (const MidiError&) {  // a score too long to tokenize
  }
  return 0;
}
