#include "spe/midi/score.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <tuple>

namespace spe::midi {
namespace {

constexpr int kTicksPerStep = 40;  // written files: 480 ticks per quarter

int64_t to_steps(int64_t tick, int ticks_per_quarter) {
  // round to nearest: (tick * 12 + tpq / 2) / tpq, ticks < 2^40 so no overflow
  return (tick * kStepsPerQuarter * 2 + ticks_per_quarter) / (2 * static_cast<int64_t>(ticks_per_quarter));
}

struct TimedEvent {
  const MidiEvent* event;
  size_t track, index;
};

// Every event of every track in time order (ties: by track, then by order in the track).
std::vector<TimedEvent> merged_events(const MidiFile& file) {
  std::vector<TimedEvent> all;
  for (size_t t = 0; t < file.tracks.size(); ++t)
    for (size_t i = 0; i < file.tracks[t].events.size(); ++i) all.push_back({&file.tracks[t].events[i], t, i});
  std::stable_sort(all.begin(), all.end(), [](const TimedEvent& a, const TimedEvent& b) {
    return std::tie(a.event->tick, a.track, a.index) < std::tie(b.event->tick, b.track, b.index);
  });
  return all;
}

struct Sounding {
  int64_t start_tick;
  int velocity, program;
};

// Sorted by start, program, pitch; same-program same-pitch overlaps cut; repeats removed.
void clean_notes(std::vector<Note>& notes) {
  std::sort(notes.begin(), notes.end(), [](const Note& a, const Note& b) {
    return std::tie(a.start, a.program, a.pitch, b.duration, a.velocity) <
           std::tie(b.start, b.program, b.pitch, a.duration, b.velocity);  // longest first at one start
  });
  std::vector<Note> kept;
  std::map<std::pair<int, int>, size_t> last;  // (program, pitch) -> index in kept
  for (const Note& n : notes) {
    const auto key = std::make_pair(n.program, n.pitch);
    const auto found = last.find(key);
    if (found != last.end()) {
      Note& previous = kept[found->second];
      if (previous.start == n.start) continue;  // the same key struck twice at once: keep the longest
      previous.duration = std::min(previous.duration, n.start - previous.start);
    }
    last[key] = kept.size();
    kept.push_back(n);
  }
  notes = std::move(kept);
}

template <class Change>
void keep_last_per_position(std::vector<Change>& changes) {
  std::vector<Change> kept;
  for (const Change& c : changes) {
    if (!kept.empty() && kept.back().position == c.position)
      kept.back() = c;
    else
      kept.push_back(c);
  }
  changes = std::move(kept);
}

}  // namespace

Score score_from_midi(const MidiFile& file) {
  Score score;
  const int tpq = file.ticks_per_quarter;
  int programs[16] = {};
  std::map<std::pair<int, int>, std::deque<Sounding>> sounding;  // (channel, pitch) -> notes on
  int64_t last_tick = 0;
  auto close = [&](std::deque<Sounding>& queue, int pitch, int64_t end_tick) {
    const Sounding s = queue.front();
    queue.pop_front();
    Note n;
    n.start = to_steps(s.start_tick, tpq);
    n.duration = std::max<int64_t>(1, to_steps(end_tick, tpq) - n.start);
    n.pitch = pitch;
    n.velocity = s.velocity;
    n.program = s.program;
    score.notes.push_back(n);
  };
  for (const TimedEvent& timed : merged_events(file)) {
    const MidiEvent& e = *timed.event;
    last_tick = std::max(last_tick, e.tick);
    const int kind = e.status & 0xF0, channel = e.status & 0x0F;
    if (e.status < 0xF0 && kind == 0xC0) {
      programs[channel] = e.data[0];
    } else if (e.status < 0xF0 && (kind == 0x90 || kind == 0x80)) {
      const int pitch = e.data[0], velocity = e.data[1];
      auto& queue = sounding[{channel, pitch}];
      if (kind == 0x90 && velocity > 0) {
        queue.push_back({e.tick, velocity, channel == kDrumChannel ? kDrumProgram : programs[channel]});
      } else if (!queue.empty()) {
        close(queue, pitch, e.tick);
      }
    } else if (e.is_meta(kMetaTempo) && e.data.size() == 3) {
      const uint32_t us_per_quarter = (uint32_t{e.data[0]} << 16) | (uint32_t{e.data[1]} << 8) | e.data[2];
      if (us_per_quarter > 0) score.tempos.push_back({to_steps(e.tick, tpq), 60e6 / us_per_quarter});
    } else if (e.is_meta(kMetaTimeSignature) && e.data.size() >= 2 && e.data[0] >= 1 && e.data[1] <= 6) {
      score.time_signatures.push_back({to_steps(e.tick, tpq), e.data[0], 1 << e.data[1]});
    }
  }
  for (auto& [key, queue] : sounding)
    while (!queue.empty()) close(queue, key.second, last_tick);
  normalise(score);
  return score;
}

void normalise(Score& score) {
  clean_notes(score.notes);
  auto by_position = [](const auto& a, const auto& b) { return a.position < b.position; };
  std::stable_sort(score.tempos.begin(), score.tempos.end(), by_position);
  std::stable_sort(score.time_signatures.begin(), score.time_signatures.end(), by_position);
  keep_last_per_position(score.tempos);
  keep_last_per_position(score.time_signatures);
}

namespace {

MidiEvent channel_event(int64_t tick, int kind, int channel, std::vector<uint8_t> data) {
  MidiEvent e;
  e.tick = tick;
  e.status = static_cast<uint8_t>(kind | channel);
  e.data = std::move(data);
  return e;
}

MidiEvent meta_event(int64_t tick, uint8_t type, std::vector<uint8_t> data) {
  MidiEvent e;
  e.tick = tick;
  e.status = 0xFF;
  e.meta_type = type;
  e.data = std::move(data);
  return e;
}

// Events at one tick: note offs, then program changes, then note ons (so a note that ends where
// the next of the same pitch starts is closed first).
int event_rank(const MidiEvent& e) {
  const int kind = e.status & 0xF0;
  return kind == 0x80 ? 0 : kind == 0xC0 ? 1 : 2;
}

MidiTrack conductor_track(const Score& score) {
  MidiTrack track;
  for (const TimeSignature& s : score.time_signatures) {
    int power = 0;
    while ((1 << power) < s.denominator && power < 6) ++power;
    track.events.push_back(meta_event(s.position * kTicksPerStep, kMetaTimeSignature,
                                      {static_cast<uint8_t>(std::clamp(s.numerator, 1, 255)), static_cast<uint8_t>(power), 24, 8}));
  }
  for (const TempoChange& t : score.tempos) {
    const auto us = static_cast<uint32_t>(std::clamp(std::lround(60e6 / t.bpm), 1l, 0xFFFFFFl));
    track.events.push_back(meta_event(t.position * kTicksPerStep, kMetaTempo,
                                      {static_cast<uint8_t>(us >> 16), static_cast<uint8_t>(us >> 8), static_cast<uint8_t>(us)}));
  }
  std::stable_sort(track.events.begin(), track.events.end(),
                   [](const MidiEvent& a, const MidiEvent& b) { return a.tick < b.tick; });
  return track;
}

}  // namespace

MidiFile midi_from_score(const Score& score) {
  MidiFile file;
  file.format = 1;
  file.ticks_per_quarter = kStepsPerQuarter * kTicksPerStep;
  file.tracks.push_back(conductor_track(score));
  // programs in order of first appearance -> their track and channel
  std::vector<int> order;
  std::map<int, size_t> track_of;
  std::map<int, int> channel_of;
  int melodic = 0;
  for (const Note& n : score.notes) {
    if (track_of.count(n.program)) continue;
    track_of[n.program] = order.size() + 1;
    order.push_back(n.program);
    if (n.program == kDrumProgram) {
      channel_of[n.program] = kDrumChannel;
    } else {
      const int slot = melodic++ % 15;
      channel_of[n.program] = slot < kDrumChannel ? slot : slot + 1;
    }
  }
  file.tracks.resize(order.size() + 1);
  // Program changes where a channel's program differs from the note's: sorted by start already.
  int channel_program[16];
  std::fill(std::begin(channel_program), std::end(channel_program), -1);
  for (const Note& n : score.notes) {
    MidiTrack& track = file.tracks[track_of[n.program]];
    const int channel = channel_of[n.program];
    const int64_t on = n.start * kTicksPerStep, off = (n.start + n.duration) * kTicksPerStep;
    if (n.program != kDrumProgram && channel_program[channel] != n.program) {
      track.events.push_back(channel_event(on, 0xC0, channel, {static_cast<uint8_t>(n.program & 0x7F)}));
      channel_program[channel] = n.program;
    }
    const auto pitch = static_cast<uint8_t>(std::clamp(n.pitch, 0, 127));
    track.events.push_back(channel_event(on, 0x90, channel, {pitch, static_cast<uint8_t>(std::clamp(n.velocity, 1, 127))}));
    track.events.push_back(channel_event(off, 0x80, channel, {pitch, 0}));
  }
  for (size_t t = 1; t < file.tracks.size(); ++t)
    std::stable_sort(file.tracks[t].events.begin(), file.tracks[t].events.end(), [](const MidiEvent& a, const MidiEvent& b) {
      return std::make_pair(a.tick, event_rank(a)) < std::make_pair(b.tick, event_rank(b));
    });
  return file;
}

}  // namespace spe::midi
