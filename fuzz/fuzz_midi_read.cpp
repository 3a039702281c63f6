// Any bytes as a MIDI file, through the reader and the score only: the fast target for the
// million-input runs (fuzz_midi also tokenizes and rewrites, at a tenth of the speed). Only
// MidiError may escape; nothing may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "spe/midi/midi_file.h"
#include "spe/midi/score.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spe::midi;
  try {
    const MidiFile file = read_midi(std::string(reinterpret_cast<const char*>(data), size), "input");
    score_from_midi(file);
  } catch (const MidiError&) {
  }
  return 0;
}
