#include "spe/midi/remi.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace spe::midi {
namespace {

enum Family { kPadFamily, kBosFamily, kEosFamily, kBarFamily, kTimeSig, kPosition, kTempo, kProgram, kPitch,
              kVelocity, kDuration, kFamilies };

struct FamilyInfo {
  const char* name;
  int64_t count;
  const char* meaning;
};

constexpr int kNumerators = 12, kMaxBarSteps = kNumerators * 4 * kStepsPerQuarter / 2;  // 12/2: 288 steps
constexpr int kTempoBins = 32, kVelocityBins = 16;
constexpr double kMinBpm = 40.0, kMaxBpm = 250.0;
constexpr int kDenominators[3] = {2, 4, 8};

const std::vector<int64_t>& duration_table() {
  static const std::vector<int64_t> table = [] {
    std::vector<int64_t> t;
    for (int64_t s = 1; s <= 24; ++s) t.push_back(s);
    for (int64_t step : {3, 6, 12, 24})
      for (int64_t s = t.back() + step; s <= 16 * step; s += step) t.push_back(s);
    return t;
  }();
  return table;
}

const FamilyInfo& family(int f) {
  static const FamilyInfo table[kFamilies] = {
      {"PAD", 1, "padding (never generated)"},
      {"BOS", 1, "beginning of a sequence"},
      {"EOS", 1, "end of a sequence"},
      {"Bar", 1, "a new bar"},
      {"TimeSig", 3 * kNumerators, "n/d, n in 1..12, d in {2, 4, 8}: after Bar, when it changes"},
      {"Position", kMaxBarSteps, "grid step into the bar (12 per quarter note)"},
      {"Tempo", kTempoBins, "quarter notes per minute, 32 bins log-spaced over 40..250"},
      {"Program", 129, "General MIDI program 0..127, or drums"},
      {"Pitch", 128, "MIDI pitch 0..127 (drums: the instrument)"},
      {"Velocity", kVelocityBins, "loudness, bins of 8: 5, 13, ..., 125"},
      {"Duration", static_cast<int64_t>(duration_table().size()), "grid steps: 1..24, then by 3, 6, 12, 24 up to 384"},
  };
  return table[f];
}

// The first id of each family, and the vocabulary size at index kFamilies.
int64_t first_id(int f) {
  static const std::vector<int64_t> firsts = [] {
    std::vector<int64_t> out{0};
    for (int i = 0; i < kFamilies; ++i) out.push_back(out.back() + family(i).count);
    return out;
  }();
  return firsts[static_cast<size_t>(f)];
}

// The family of a token id below the vocabulary size.
int family_of(int64_t id) {
  static const std::vector<uint8_t> families = [] {
    std::vector<uint8_t> out;
    for (int f = 0; f < kFamilies; ++f) out.insert(out.end(), static_cast<size_t>(family(f).count), static_cast<uint8_t>(f));
    return out;
  }();
  return families[static_cast<size_t>(id)];
}

double tempo_of_bin(int bin) { return kMinBpm * std::pow(kMaxBpm / kMinBpm, bin / double(kTempoBins - 1)); }

int tempo_bin(double bpm) {
  const double x = std::log(std::clamp(bpm, kMinBpm, kMaxBpm) / kMinBpm) / std::log(kMaxBpm / kMinBpm);
  return static_cast<int>(std::lround(x * (kTempoBins - 1)));
}

int velocity_bin(int velocity) { return std::clamp((velocity - 1) / 8, 0, kVelocityBins - 1); }
int velocity_of_bin(int bin) { return 8 * bin + 5; }

// The index of the longest table duration not above `steps` (steps >= 1).
int duration_index(int64_t steps) {
  const auto& t = duration_table();
  return static_cast<int>(std::upper_bound(t.begin(), t.end(), steps) - t.begin()) - 1;
}

// The time signature in the vocabulary's set closest to n/d.
TimeSignature nearest_signature(const TimeSignature& s) {
  TimeSignature out = s;
  out.denominator = s.denominator <= 2 ? 2 : s.denominator >= 8 ? 8 : 4;
  out.numerator = std::clamp(s.numerator, 1, kNumerators);
  return out;
}

int signature_index(const TimeSignature& s) {
  const int d = s.denominator == 2 ? 0 : s.denominator == 4 ? 1 : 2;
  return d * kNumerators + s.numerator - 1;
}

int64_t bar_steps(const TimeSignature& s) { return int64_t{s.numerator} * 4 * kStepsPerQuarter / s.denominator; }

}  // namespace

int64_t RemiVocabulary::size() const { return first_id(kFamilies); }

std::string RemiVocabulary::token_name(int64_t id) const {
  if (id < 0 || id >= size()) throw std::out_of_range(fmt::format("token {} is not in [0, {})", id, size()));
  const int f = family_of(id);
  const int64_t i = id - first_id(f);
  switch (f) {
    case kTimeSig:
      return fmt::format("TimeSig_{}/{}", i % kNumerators + 1, kDenominators[i / kNumerators]);
    case kPosition:
      return fmt::format("Position_{}", i);
    case kTempo:
      return fmt::format("Tempo_{:.0f}", tempo_of_bin(static_cast<int>(i)));
    case kProgram:
      return i == kDrumProgram ? "Program_drums" : fmt::format("Program_{}", i);
    case kPitch:
      return fmt::format("Pitch_{}", i);
    case kVelocity:
      return fmt::format("Velocity_{}", velocity_of_bin(static_cast<int>(i)));
    case kDuration:
      return fmt::format("Duration_{}", duration_table()[static_cast<size_t>(i)]);
    default:
      return family(f).name;
  }
}

int64_t RemiVocabulary::token_id(const std::string& name) const {
  static const std::vector<std::string> names = [this] {
    std::vector<std::string> all;
    for (int64_t id = 0; id < size(); ++id) all.push_back(token_name(id));
    return all;
  }();
  const auto found = std::find(names.begin(), names.end(), name);
  return found == names.end() ? -1 : found - names.begin();
}

std::string RemiVocabulary::describe() const {
  std::string out = fmt::format("REMI vocabulary: {} tokens\n{:<10} {:>6} {:>6}  meaning\n", size(), "family", "first", "count");
  for (int f = 0; f < kFamilies; ++f)
    out += fmt::format("{:<10} {:>6} {:>6}  {}\n", family(f).name, first_id(f), family(f).count, family(f).meaning);
  return out;
}

std::vector<uint16_t> RemiVocabulary::encode(const Score& score) const {
  for (const Note& n : score.notes)
    if (n.start < 0 || n.pitch < 0 || n.pitch > 127 || n.velocity < 1 || n.velocity > 127 || n.program < 0 ||
        n.program > kDrumProgram)
      throw std::invalid_argument(fmt::format("a note (start {}, pitch {}, velocity {}, program {}) is outside the ranges "
                                              "of a score (start >= 0, pitch 0..127, velocity 1..127, program 0..128)",
                                              n.start, n.pitch, n.velocity, n.program));
  std::vector<uint16_t> out{static_cast<uint16_t>(bos())};
  auto emit = [&](int f, int64_t i) { out.push_back(static_cast<uint16_t>(first_id(f) + i)); };
  // The tempo changes that make tokens: binned, each to another bin than the one before.
  std::vector<std::pair<int64_t, int>> tempos;  // (position, bin)
  for (const TempoChange& t : score.tempos)
    if (tempos.empty() || tempo_bin(t.bpm) != tempos.back().second) tempos.emplace_back(t.position, tempo_bin(t.bpm));
  int64_t last = -1;  // the last position with content
  if (!score.notes.empty()) last = score.notes.back().start;
  if (!tempos.empty()) last = std::max(last, tempos.back().first);
  std::vector<TimeSignature> signatures;
  for (const TimeSignature& s : score.time_signatures) signatures.push_back(nearest_signature(s));
  size_t next_note = 0, next_tempo = 0, next_signature = 0;
  TimeSignature signature;  // 4/4 until a change
  int64_t bars = 0;
  for (int64_t bar_start = 0; bar_start <= last; bar_start += bar_steps(signature), ++bars) {
    if (bars >= kMaxBars)
      throw MidiError(fmt::format("the score is longer than {} bars: too long to tokenize", kMaxBars));
    const TimeSignature previous = signature;
    while (next_signature < signatures.size() && signatures[next_signature].position <= bar_start)
      signature = signatures[next_signature++];
    out.push_back(static_cast<uint16_t>(bar()));
    if (bars == 0 || signature.numerator != previous.numerator || signature.denominator != previous.denominator)
      emit(kTimeSig, signature_index(signature));
    const int64_t bar_end = bar_start + bar_steps(signature);
    while (true) {
      // the next position inside this bar with a note or a tempo change
      int64_t position = bar_end;
      if (next_note < score.notes.size()) position = std::min(position, score.notes[next_note].start);
      if (next_tempo < tempos.size()) position = std::min(position, tempos[next_tempo].first);
      if (position >= bar_end) break;
      emit(kPosition, position - bar_start);
      if (next_tempo < tempos.size() && tempos[next_tempo].first == position) emit(kTempo, tempos[next_tempo++].second);
      for (; next_note < score.notes.size() && score.notes[next_note].start == position; ++next_note) {
        const Note& n = score.notes[next_note];
        emit(kProgram, n.program);
        emit(kPitch, n.pitch);
        emit(kVelocity, velocity_bin(n.velocity));
        emit(kDuration, duration_index(std::max<int64_t>(n.duration, 1)));
      }
    }
  }
  out.push_back(static_cast<uint16_t>(eos()));
  return out;
}

bool RemiGrammar::allows(int64_t token) const {
  RemiGrammar after = *this;
  return after.push(token);
}

std::vector<bool> RemiGrammar::allowed() const {
  std::vector<bool> out(static_cast<size_t>(first_id(kFamilies)));
  for (size_t id = 0; id < out.size(); ++id) out[id] = allows(static_cast<int64_t>(id));
  return out;
}

bool RemiGrammar::push(int64_t token, Score* score) {
  if (ended_ || token < 0 || token >= first_id(kFamilies)) return false;  // decode skips ids past the vocabulary
  const int f = family_of(token);
  const int64_t i = token - first_id(f);
  switch (f) {
    case kPadFamily:
    case kBosFamily:
      return true;
    case kEosFamily:
      ended_ = true;
      return true;
    case kBarFamily: {
      const int64_t next = bar_start_ < 0 ? 0 : bar_start_ + bar_steps(signature_);
      if (next > RemiVocabulary::kMaxBars * int64_t{kMaxBarSteps}) return false;
      bar_start_ = next, position_ = program_ = pitch_ = velocity_ = -1, bar_opened_ = true;
      return true;
    }
    case kTimeSig: {
      if (!bar_opened_) return false;
      const TimeSignature s{bar_start_, static_cast<int>(i % kNumerators) + 1, kDenominators[i / kNumerators]};
      if (score && (!signature_read_ || s.numerator != signature_.numerator || s.denominator != signature_.denominator))
        score->time_signatures.push_back(s);
      signature_ = s, signature_read_ = true;
      return true;
    }
    case kPosition:
      if (bar_start_ < 0 || i >= bar_steps(signature_)) return false;
      position_ = bar_start_ + i, bar_opened_ = false, program_ = pitch_ = velocity_ = -1;
      return true;
    case kTempo:
      if (position_ < 0) return false;
      if (score) score->tempos.push_back({position_, tempo_of_bin(static_cast<int>(i))});
      return true;
    case kProgram:
      if (position_ < 0) return false;
      program_ = static_cast<int>(i), pitch_ = velocity_ = -1;
      return true;
    case kPitch:
      if (program_ < 0) return false;
      pitch_ = static_cast<int>(i), velocity_ = -1;
      return true;
    case kVelocity:
      if (pitch_ < 0) return false;
      velocity_ = velocity_of_bin(static_cast<int>(i));
      return true;
    case kDuration:
      if (velocity_ < 0) return false;
      if (score) score->notes.push_back({position_, duration_table()[static_cast<size_t>(i)], pitch_, velocity_, program_});
      pitch_ = velocity_ = -1;
      return true;
  }
  return false;
}

RemiDecoding RemiVocabulary::decode(const std::vector<uint16_t>& tokens) const {
  RemiDecoding out;
  RemiGrammar grammar;
  for (uint16_t token : tokens) {
    if (!grammar.push(token, &out.score)) ++out.skipped;
    if (grammar.ended()) break;
  }
  normalise(out.score);
  return out;
}

}  // namespace spe::midi
