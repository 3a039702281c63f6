#pragma once
// Building MIDI files byte by byte for the tests, and the corpus of real files from Debian.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "spe/midi/mma_songs.h"

namespace spe::midi::testing {

inline std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

inline std::string big_endian(uint32_t value, int count) {
  std::string out;
  for (int i = count - 1; i >= 0; --i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
  return out;
}

// A header chunk then one MTrk chunk per body.
inline std::string smf(int format, int division, const std::vector<std::string>& track_bodies) {
  std::string out = "MThd" + big_endian(6, 4) + big_endian(static_cast<uint32_t>(format), 2) +
                    big_endian(static_cast<uint32_t>(track_bodies.size()), 2) + big_endian(static_cast<uint32_t>(division), 2);
  for (const std::string& body : track_bodies) out += "MTrk" + big_endian(static_cast<uint32_t>(body.size()), 4) + body;
  return out;
}

inline const std::string kEndOfTrack = bytes({0x00, 0xFF, 0x2F, 0x00});

// Every MIDI file Debian's openttd-openmsx and simutrans-data install (84).
inline std::vector<std::string> corpus_files() {
  std::vector<std::string> all;
  for (const char* dir : {"/usr/share/games/openttd/baseset/openmsx", "/usr/share/games/simutrans/music"})
    for (const std::string& f : find_midi_files(dir)) all.push_back(f);
  return all;
}

// Small real files for the exhaustive damage tests.
inline std::vector<std::string> small_files() {
  return {"/usr/share/games/openttd/baseset/openmsx/train_filled_with_cash.mid",
          "/usr/share/games/simutrans/music/34-flyingaway.mid",
          "/usr/share/games/openttd/baseset/openmsx/coconut_run2.mid"};
}

}  // namespace spe::midi::testing
