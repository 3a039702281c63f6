#include "spe/midi/mma_songs.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "spe/util/files.h"
#include "spe/util/hash.h"
#include "spe/util/process.h"

namespace spe::midi {
namespace {

namespace fs = std::filesystem;

constexpr const char* kNoteNames[12] = {"C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"};

struct Degree {
  int semitones;                      // above the key's root
  std::vector<const char*> qualities; // chord suffixes to draw from
};

// Degrees of a major key and the chord qualities they take here.
const Degree kI{0, {"", "6", "maj7"}}, kii{2, {"m", "m7"}}, kiii{4, {"m", "m7"}}, kIV{5, {"", "6", "maj7"}},
    kV{7, {"", "7"}}, kvi{9, {"m", "m7"}}, kI7{0, {"7"}}, kIV7{5, {"7"}}, kV7{7, {"7"}};

const std::vector<std::vector<Degree>>& progressions() {
  static const std::vector<std::vector<Degree>> all = {
      {kI, kvi, kIV, kV},   {kI, kIV, kV, kI},   {kii, kV, kI, kI},    {kI, kV, kvi, kIV},
      {kvi, kIV, kI, kV},   {kI, kiii, kIV, kV}, {kI, kI, kIV, kIV, kV, kV, kI, kI},
      {kI7, kI7, kI7, kI7, kIV7, kIV7, kI7, kI7, kV7, kIV7, kI7, kV7},  // 12-bar blues
  };
  return all;
}

bool is_variant(const std::string& groove) {
  std::string lower = groove;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* word : {"intro", "end", "fill", "sus", "plus"})
    if (lower.find(word) != std::string::npos) return true;
  return false;
}

// A chart: tempo, groove, one chord per bar, ending on the key's root.
std::string chart(const std::string& groove, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return static_cast<size_t>(std::uniform_int_distribution<size_t>(0, n - 1)(rng)); };
  const int key = static_cast<int>(pick(12));
  const int tempo = 70 + static_cast<int>(pick(91));
  const int bars = 16 + static_cast<int>(pick(33));
  const auto& progression = progressions()[pick(progressions().size())];
  std::string text = fmt::format("// drawn by spe data midi\nRndSeed {}\nTempo {}\nGroove {}\n", pick(1000000), tempo, groove);
  for (int bar = 1; bar <= bars; ++bar) {
    const Degree& d = bar == bars ? kI : progression[static_cast<size_t>(bar - 1) % progression.size()];
    text += fmt::format("{} {}{}\n", bar, kNoteNames[(key + d.semitones) % 12], d.qualities[pick(d.qualities.size())]);
  }
  return text;
}

}  // namespace

std::vector<std::string> mma_grooves(const std::string& library) {
  std::error_code error;
  if (!fs::is_directory(library, error))
    throw std::runtime_error(fmt::format("MMA's groove library is not at '{}' (install the mma package)", library));
  std::vector<std::string> grooves;
  for (const auto& entry : fs::directory_iterator(library)) {
    if (entry.path().extension() != ".mma") continue;
    std::istringstream lines(read_file(entry.path().string()));
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      std::string command, name;
      words >> command >> name;
      std::transform(command.begin(), command.end(), command.begin(), [](unsigned char c) { return std::tolower(c); });
      if (command == "defgroove" && !name.empty() && !is_variant(name)) grooves.push_back(name);
    }
  }
  std::sort(grooves.begin(), grooves.end());
  grooves.erase(std::unique(grooves.begin(), grooves.end()), grooves.end());
  if (grooves.empty()) throw std::runtime_error(fmt::format("no grooves found in '{}'", library));
  return grooves;
}

std::vector<std::string> render_mma_songs(const std::string& out_dir, int count, uint64_t seed) {
  const std::vector<std::string> grooves = mma_grooves();
  fs::create_directories(out_dir);
  std::mt19937_64 rng = seeded_engine(seed, "mma songs");
  std::vector<std::string> songs;
  int failures = 0;
  for (int i = 0; i < count;) {
    const std::string groove = grooves[std::uniform_int_distribution<size_t>(0, grooves.size() - 1)(rng)];
    const fs::path mma = fs::path(out_dir) / fmt::format("song_{:03d}.mma", i), mid = fs::path(mma).replace_extension(".mid");
    write_file_atomically(mma.string(), chart(groove, rng));
    fs::remove(mid);
    const int status = run_program({"mma", "-f", mid.string(), mma.string()});
    if (status == 127) throw std::runtime_error("the mma program is missing (install the mma package)");
    if (status == 0 && fs::exists(mid)) {
      songs.push_back(mid.string());
      ++i;
    } else if (++failures > count + 10) {
      throw std::runtime_error(fmt::format("mma failed on {} charts (the last: {}, groove {})", failures, mma.string(), groove));
    }
  }
  return songs;
}

std::vector<std::string> find_midi_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied)) {
    if (!entry.is_regular_file()) continue;
    std::string extension = entry.path().extension().string();
    std::transform(extension.begin(), extension.end(), extension.begin(), [](unsigned char c) { return std::tolower(c); });
    if (extension == ".mid" || extension == ".midi") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace spe::midi
