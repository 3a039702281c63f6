#include "spe/data/music.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "spe/midi/midi_file.h"
#include "spe/midi/mma_songs.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"

namespace spe::data {
namespace {

constexpr const char* kSplits[3] = {"train", "valid", "test"};

struct TokenizedFile {
  std::string path;
  std::vector<uint16_t> tokens;
  int64_t notes = 0;
};

// Every MIDI file of the inputs (folders recursively, or files), sorted, without repeats.
std::vector<std::string> list_files(const MusicOptions& o) {
  std::vector<std::string> files;
  for (const std::string& input : o.inputs) {
    if (std::filesystem::is_directory(input)) {
      for (const std::string& f : midi::find_midi_files(input)) files.push_back(f);
    } else if (std::filesystem::is_regular_file(input)) {
      files.push_back(input);
    } else {
      throw std::runtime_error(fmt::format("'{}' is neither a folder nor a file", input));
    }
  }
  if (o.mma_songs > 0) {
    if (o.mma_dir.empty()) throw std::invalid_argument("MMA songs need a folder to be rendered into");
    for (const std::string& f : midi::render_mma_songs(o.mma_dir, o.mma_songs, o.split.seed)) files.push_back(f);
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

DatasetInfo music_info(const std::string& split, int64_t vocab_size, const std::string& source) {
  DatasetInfo info;
  info.task = "music";
  info.split = split;
  info.vocab_size = vocab_size;
  info.num_classes = 0;
  info.source = source;
  return info;
}

// Windows of `window` tokens (hop = window); a last piece of at least window / 4 tokens is kept.
void add_windows(Dataset& dataset, const std::vector<uint16_t>& tokens, int64_t window) {
  const auto size = static_cast<int64_t>(tokens.size());
  for (int64_t start = 0; start < size; start += window) {
    const int64_t end = std::min(size, start + window);
    if (end - start < std::max<int64_t>(2, window / 4)) break;
    dataset.add(0, {std::vector<uint16_t>(tokens.begin() + start, tokens.begin() + end)});
  }
}

}  // namespace

std::vector<std::string> debian_midi_folders() {
  return {"/usr/share/games/openttd/baseset/openmsx", "/usr/share/games/simutrans/music"};
}

MusicCorpus make_music_dataset(const MusicOptions& o) {
  if (o.window < 2) throw std::invalid_argument(fmt::format("window is {}, expected at least 2 tokens", o.window));
  const midi::RemiVocabulary vocabulary;
  std::vector<TokenizedFile> readable;
  std::vector<std::string> skipped, names;
  for (const std::string& path : list_files(o)) {
    try {
      const midi::Score score = midi::score_from_midi(midi::load_midi(path));
      if (score.notes.empty()) {
        skipped.push_back(path + ": no notes");
        continue;
      }
      readable.push_back({path, vocabulary.encode(score), static_cast<int64_t>(score.notes.size())});
      names.push_back(path);
    } catch (const std::exception& e) {
      skipped.push_back(e.what());
    }
  }
  const auto split_of = assign_splits(names, o.split);
  const std::string source = fmt::format("{} MIDI files (REMI tokens, {} skipped), split by file with seed {}",
                                         readable.size(), skipped.size(), o.split.seed);
  const int64_t v = vocabulary.size();
  MusicCorpus corpus{{Dataset(music_info(kSplits[0], v, source)), Dataset(music_info(kSplits[1], v, source)),
                      Dataset(music_info(kSplits[2], v, source))},
                     {},
                     {},
                     std::move(skipped)};
  for (const TokenizedFile& f : readable) {
    const auto s = static_cast<size_t>(split_of.at(f.path));
    if (s == 0)
      add_windows(corpus.splits[s], f.tokens, o.window);
    else
      corpus.splits[s].add(0, {f.tokens});
    ++corpus.files[s];
    corpus.notes[s] += f.notes;
  }
  return corpus;
}

}  // namespace spe::data
