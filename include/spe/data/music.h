#pragma once
// Symbolic music as a language-modelling dataset: MIDI files -> REMI tokens (spe/midi/remi.h),
// split by file into train / valid / test. Training sequences are windows of `window` tokens of
// each file's token stream; validation and test keep whole files, so that models trained on
// windows can be evaluated on longer sequences (spe extrapolate).
#include <array>
#include <string>
#include <vector>

#include "spe/data/dataset.h"
#include "spe/data/text.h"

namespace spe::data {

// The MIDI folders Debian's packages install (openttd-openmsx, simutrans-data).
std::vector<std::string> debian_midi_folders();

struct MusicOptions {
  std::vector<std::string> inputs;  // folders searched recursively for .mid/.midi, and files
  int mma_songs = 0;                // songs rendered from MMA's grooves into mma_dir, added
  std::string mma_dir;              // where the MMA songs go (required when mma_songs > 0)
  int64_t window = 256;             // tokens per training sequence
  SplitOptions split;               // by file (max_length is not used)
};

struct MusicCorpus {
  std::array<Dataset, 3> splits;               // train, valid, test
  std::array<int64_t, 3> files{}, notes{};     // per split
  std::vector<std::string> skipped;            // "FILE: reason" for each file that could not be read
};

// Reads every file (a damaged one is skipped, its reason kept), tokenizes, splits by file.
MusicCorpus make_music_dataset(const MusicOptions& options);

}  // namespace spe::data
