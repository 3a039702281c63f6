#pragma once
// Songs for a music corpus from Debian's MMA (Musical MIDI Accompaniment): its groove library
// renders chord charts to multi-track MIDI (drums, bass, chords, ...). Charts are drawn here
// from a seed: a groove of MMA's standard library, a key, a tempo, and a common chord
// progression repeated over 16 to 48 bars; each chart is rendered by the `mma` program.
#include <cstdint>
#include <string>
#include <vector>

namespace spe::midi {

// The main grooves of MMA's standard library (DefGroove names without intro/ending/fill
// variants), sorted. Throws when the library is missing (install the `mma` package).
std::vector<std::string> mma_grooves(const std::string& library = "/usr/share/mma/lib/stdlib");

// Writes `count` charts (song_000.mma, ...) into out_dir, renders each with mma and returns the
// .mid paths, sorted. The same seed gives the same files. A groove that mma fails to render is
// replaced by another one; throws when mma is missing or nothing renders.
std::vector<std::string> render_mma_songs(const std::string& out_dir, int count, uint64_t seed);

// Every .mid / .midi file (any case) under dir, recursively, sorted.
std::vector<std::string> find_midi_files(const std::string& dir);

}  // namespace spe::midi
