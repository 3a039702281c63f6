// `spe midi`: MIDI files to REMI tokens and back, the vocabulary, and what a file holds.
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include "commands.h"
#include "spe/midi/midi_file.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"
#include "spe/util/files.h"

namespace spe::cli {
namespace {

// A tokens file: names (Pitch_60) or ids, separated by white space; the error names the word.
std::vector<uint16_t> read_tokens(const std::string& path, const midi::RemiVocabulary& vocabulary) {
  std::istringstream words(read_file(path));
  std::vector<uint16_t> tokens;
  for (std::string word; words >> word;) {
    int64_t id = vocabulary.token_id(word);
    if (id < 0 && word.find_first_not_of("0123456789") == std::string::npos && word.size() < 7) id = std::stoll(word);
    if (id < 0 || id >= vocabulary.size())
      throw std::runtime_error(fmt::format("{}: '{}' is neither a token name nor an id below {} (see spe midi vocab)",
                                           path, word, vocabulary.size()));
    tokens.push_back(static_cast<uint16_t>(id));
  }
  return tokens;
}

void encode(const std::string& file, const std::string& out, bool ids) {
  const midi::RemiVocabulary vocabulary;
  const midi::Score score = midi::score_from_midi(midi::load_midi(file));
  const std::vector<uint16_t> tokens = vocabulary.encode(score);
  std::string text;
  for (uint16_t t : tokens) text += (ids ? std::to_string(t) : vocabulary.token_name(t)) + "\n";
  if (out.empty())
    std::cout << text;
  else
    write_file_atomically(out, text);
  std::cerr << fmt::format("{}: {} notes, {} tokens\n", file, score.notes.size(), tokens.size());
}

void decode(const std::string& file, const std::string& out) {
  const midi::RemiVocabulary vocabulary;
  const midi::RemiDecoding decoded = vocabulary.decode(read_tokens(file, vocabulary));
  midi::save_midi(out, midi::midi_from_score(decoded.score));
  std::cerr << fmt::format("{}: {} notes, {} tokens skipped (out of place) -> {}\n", file, decoded.score.notes.size(),
                           decoded.skipped, out);
}

void info(const std::string& file) {
  const midi::MidiFile midi = midi::load_midi(file);
  const midi::Score score = midi::score_from_midi(midi);
  std::set<int> programs;
  int64_t end = 0;
  for (const midi::Note& n : score.notes) {
    programs.insert(n.program);
    end = std::max(end, n.start + n.duration);
  }
  std::vector<std::string> names;
  for (int p : programs) names.push_back(p == midi::kDrumProgram ? "\"drums\"" : std::to_string(p));
  std::cout << fmt::format("{{\"file\": \"{}\", \"format\": {}, \"tracks\": {}, \"ticks_per_quarter\": {}, \"notes\": {}, "
                           "\"quarter_notes\": {:.2f}, \"tempo_changes\": {}, \"time_signatures\": {}, \"programs\": [{}]}}\n",
                           file, midi.format, midi.tracks.size(), midi.ticks_per_quarter, score.notes.size(),
                           static_cast<double>(end) / midi::kStepsPerQuarter, score.tempos.size(),
                           score.time_signatures.size(), fmt::join(names, ", "));
}

}  // namespace

void add_midi_command(CLI::App& app) {
  auto* midi = app.add_subcommand("midi", "MIDI files to REMI tokens and back (docs/MIDI.md)");
  midi->require_subcommand(1);
  struct Args {
    std::string file, out;
    bool ids = false;
  };
  auto a = std::make_shared<Args>();
  auto* enc = midi->add_subcommand("encode", "a MIDI file's tokens, one per line");
  enc->add_option("FILE", a->file, "a .mid file")->required()->check(CLI::ExistingFile);
  enc->add_option("--out", a->out, "write them to this file (default: standard output)");
  enc->add_flag("--ids", a->ids, "ids instead of names");
  enc->callback([a] { encode(a->file, a->out, a->ids); });
  auto* dec = midi->add_subcommand("decode", "tokens (names or ids, as encode writes them) to a MIDI file");
  dec->add_option("TOKENS", a->file, "a tokens file")->required()->check(CLI::ExistingFile);
  dec->add_option("--out", a->out, "the .mid file to write")->required();
  dec->callback([a] { decode(a->file, a->out); });
  auto* inf = midi->add_subcommand("info", "format, tracks, notes, length and programs of a MIDI file");
  inf->add_option("FILE", a->file, "a .mid file")->required()->check(CLI::ExistingFile);
  inf->callback([a] { info(a->file); });
  midi->add_subcommand("vocab", "the REMI vocabulary")->callback([] { std::cout << midi::RemiVocabulary().describe(); });
}

}  // namespace spe::cli
