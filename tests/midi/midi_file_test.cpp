// The MIDI reader on hand-built files (every kind of event, the deviations from the standard it
// reads as players do, every structural error) and on damaged real files: every truncation point
// reads the whole events before it or is an error naming the file, byte flips never crash.
#include "spe/midi/midi_file.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "midi_support.h"
#include "spe/midi/remi.h"
#include "spe/util/files.h"

namespace spe::midi {
namespace {

using testing::bytes;
using testing::kEndOfTrack;
using testing::smf;

std::string error_of(const std::string& data) {
  try {
    read_midi(data, "song.mid");
  } catch (const MidiError& e) {
    return e.what();
  }
  return "no error";
}

TEST(MidiFile, ReadsEveryKindOfEvent) {
  const std::string good = smf(1, 96, {bytes({0x00, 0x90, 60, 100, 0x10, 62, 90, 0x08, 60, 0, 0x00, 0xC3, 5, 0x00, 0xF0,
                                               0x03, 1, 2, 0xF7, 0x00, 0xF7, 0x01, 0x42, 0x81, 0x00, 0xFF, 0x51, 0x03,
                                               0x07, 0xA1, 0x20}) +
                                         kEndOfTrack});
  const MidiFile f = read_midi(good, "song.mid");
  EXPECT_EQ(f.format, 1);
  EXPECT_EQ(f.ticks_per_quarter, 96);
  ASSERT_EQ(f.tracks.size(), 1u);
  const auto& e = f.tracks[0].events;
  ASSERT_EQ(e.size(), 8u);
  EXPECT_EQ(e[0], (MidiEvent{0, 0x90, 0, {60, 100}}));
  EXPECT_EQ(e[1], (MidiEvent{16, 0x90, 0, {62, 90}}));
  EXPECT_EQ(e[2], (MidiEvent{24, 0x90, 0, {60, 0}}));
  EXPECT_EQ(e[3], (MidiEvent{24, 0xC3, 0, {5}}));
  EXPECT_EQ(e[4], (MidiEvent{24, 0xF0, 0, {1, 2, 0xF7}}));
  EXPECT_EQ(e[5], (MidiEvent{24, 0xF7, 0, {0x42}}));
  EXPECT_EQ(e[6], (MidiEvent{152, 0xFF, kMetaTempo, {0x07, 0xA1, 0x20}}));
  EXPECT_TRUE(e[7].is_meta(kMetaEndOfTrack));
}

TEST(MidiFile, SkipsUnknownChunksAndReadsFormatZero) {
  std::string data = smf(0, 480, {bytes({0x00, 0x90, 60, 100, 0x00, 0x99, 36, 100, 0x60, 0x80, 60, 0, 0x00, 0x89, 36, 0}) +
                                  kEndOfTrack});
  data.insert(14, "XTRA" + testing::big_endian(3, 4) + "abc");  // between the header and the track
  const MidiFile f = read_midi(data, "song.mid");
  EXPECT_EQ(f.format, 0);
  ASSERT_EQ(f.tracks.size(), 1u);
  EXPECT_EQ(f.tracks[0].events.size(), 5u);
  EXPECT_EQ(f.tracks[0].events[1].status, 0x99);
}

TEST(MidiFile, RefusesBrokenStructureNamingFileAndProblem) {
  const std::string track = bytes({0x00, 0x90, 60, 100}) + kEndOfTrack;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"RIFF....", "not a Standard MIDI File"},
      {smf(1, 0x8000 | (25 << 8) | 40, {track}), "SMPTE time division is not supported"},
      {smf(1, 0, {track}), "time division is 0"},
      {smf(0, 96, {track, track}), "a format 0 file declares 2 tracks"},
      {smf(3, 96, {track}), "format 3 is not 0, 1 or 2"},
      {smf(1, 96, {bytes({0x81, 0x81, 0x81, 0x81, 0x01, 0x90, 60, 100}) + kEndOfTrack}), "more than 4 bytes"},
      {smf(1, 96, {bytes({0x00, 0x90, 60, 0x80}) + kEndOfTrack}), "data byte 0x80 has its top bit set"},
      {smf(1, 96, {bytes({0x00, 0xF1, 0x00}) + kEndOfTrack}), "status byte 0xF1 is not allowed"},
      {smf(1, 96, {bytes({0x00, 0xFF, 0x01, 0x7F, 'a'}) + kEndOfTrack}), "meta event declares 127 bytes"},
      {smf(1, 96, {track}).substr(0, 20), "truncated"},
  };
  for (const auto& [data, expected] : cases) {
    const std::string error = error_of(data);
    EXPECT_NE(error.find(expected), std::string::npos) << "expected \"" << expected << "\", got: " << error;
    EXPECT_EQ(error.rfind("song.mid: ", 0), 0u) << error;
  }
}

// The header's track count, rewritten.
std::string with_track_count(std::string file, int count) {
  return file.replace(10, 2, testing::big_endian(static_cast<uint32_t>(count), 2));
}

// Deviation 1: running status goes on after meta and sysex events (the standard says they cancel it).
TEST(MidiFile, RunningStatusGoesOnAfterMetaAndSysexEvents) {
  const std::string body = bytes({0x00, 0x90, 60, 100,          // note on, channel 0
                                  0x00, 0xFF, 0x03, 0x01, 'x',  // meta: track name
                                  0x10, 62, 90,                 // running status after the meta: note on
                                  0x00, 0xF0, 0x02, 0x01, 0xF7,  // sysex
                                  0x08, 60, 0,                  // running status after the sysex: note on, velocity 0
                                  0x00, 0xC1, 5,                // program change, channel 1
                                  0x04, 7}) +                   // running status with one data byte
                           kEndOfTrack;
  const MidiFile f = read_midi(smf(1, 96, {body}), "song.mid");
  ASSERT_EQ(f.tracks.size(), 1u);
  const std::vector<MidiEvent> expected = {{0, 0x90, 0, {60, 100}},  {0, 0xFF, 0x03, {'x'}}, {16, 0x90, 0, {62, 90}},
                                           {16, 0xF0, 0, {1, 0xF7}}, {24, 0x90, 0, {60, 0}}, {24, 0xC1, 0, {5}},
                                           {28, 0xC1, 0, {7}},       {28, 0xFF, kMetaEndOfTrack, {}}};
  EXPECT_EQ(f.tracks[0].events, expected);
}

// Deviation 2: a track without an end of track ends with its chunk, and gets one there.
TEST(MidiFile, ATrackWithoutEndOfTrackEndsWithItsChunk) {
  const std::string no_end = bytes({0x00, 0x90, 60, 100, 0x60, 0x80, 60, 0});
  const std::string tempo = bytes({0x00, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20}) + kEndOfTrack;
  const MidiFile f = read_midi(smf(1, 96, {no_end, tempo, ""}), "song.mid");
  ASSERT_EQ(f.tracks.size(), 3u);
  EXPECT_EQ(f.tracks[0].events, (std::vector<MidiEvent>{{0, 0x90, 0, {60, 100}}, {96, 0x80, 0, {60, 0}},
                                                        {96, 0xFF, kMetaEndOfTrack, {}}}));
  EXPECT_EQ(f.tracks[1].events, (std::vector<MidiEvent>{{0, 0xFF, kMetaTempo, {0x07, 0xA1, 0x20}},
                                                        {0, 0xFF, kMetaEndOfTrack, {}}}));
  EXPECT_EQ(f.tracks[2].events, (std::vector<MidiEvent>{{0, 0xFF, kMetaEndOfTrack, {}}}));
  const MidiFile again = read_midi(write_midi(f), "rewritten");
  for (size_t t = 0; t < f.tracks.size(); ++t) EXPECT_EQ(again.tracks[t].events, f.tracks[t].events);
}

// Deviation 3: a track chunk that runs past the end of the file keeps the events wholly there; the
// one the file ends inside (in its delta time, status, data, length or payload) is dropped.
TEST(MidiFile, ATrackCutByTheEndOfTheFileKeepsItsWholeEvents) {
  const std::string whole = smf(1, 96, {bytes({0x00, 0x90, 60, 100,                          // bytes 22-25
                                               0x10, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20,     // 26-32
                                               0x08, 0x80, 60, 0}) +                         // 33-36
                                        kEndOfTrack});                                       // 37-40
  const std::vector<MidiEvent> all = read_midi(whole, "song.mid").tracks.at(0).events;
  ASSERT_EQ(all.size(), 4u);
  const std::vector<size_t> event_ends = {26, 33, 37, 41};
  for (size_t cut = 22; cut < whole.size(); ++cut) {
    SCOPED_TRACE(fmt::format("cut at byte {}", cut));
    const auto kept = static_cast<size_t>(
        std::count_if(event_ends.begin(), event_ends.end(), [&](size_t end) { return end <= cut; }));
    std::vector<MidiEvent> expected(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(kept));
    expected.push_back({kept == 0 ? 0 : expected.back().tick, 0xFF, kMetaEndOfTrack, {}});
    const MidiFile f = read_midi(whole.substr(0, cut), "song.mid");
    ASSERT_EQ(f.tracks.size(), 1u);
    EXPECT_EQ(f.tracks[0].events, expected);
  }
  // A last chunk declaring more bytes than the file holds, around a whole track: every event.
  std::string too_long = whole;
  too_long.replace(18, 4, testing::big_endian(100000, 4));
  EXPECT_EQ(read_midi(too_long, "song.mid").tracks.at(0).events, all);
}

// Deviation 4: a header declaring more tracks than the file holds; the tracks there are read.
TEST(MidiFile, TracksTheHeaderDeclaresButTheFileLacksAreNotRequired) {
  const std::string note = bytes({0x00, 0x99, 36, 100, 0x18, 0x89, 36, 0}) + kEndOfTrack;
  const std::string tempo = bytes({0x00, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20}) + kEndOfTrack;
  const MidiFile two = read_midi(smf(1, 96, {tempo, note}), "song.mid");
  const std::string two_of_five = with_track_count(smf(1, 96, {tempo, note}), 5);
  for (const std::string& data : {two_of_five, two_of_five + "MTrk"}) {  // then a chunk header cut short
    const MidiFile f = read_midi(data, "song.mid");
    ASSERT_EQ(f.tracks.size(), 2u);
    EXPECT_EQ(f.tracks[0].events, two.tracks[0].events);
    EXPECT_EQ(f.tracks[1].events, (std::vector<MidiEvent>{{0, 0x99, 0, {36, 100}}, {24, 0x89, 0, {36, 0}},
                                                          {24, 0xFF, kMetaEndOfTrack, {}}}));
  }
}

// Bytes after the tracks the header declares (padding, appended data) are not read.
TEST(MidiFile, BytesAfterTheDeclaredTracksAreIgnored) {
  const std::string data = smf(0, 96, {bytes({0x00, 0x90, 60, 100, 0x60, 0x80, 60, 0}) + kEndOfTrack});
  const MidiFile padded = read_midi(data + std::string(100, '\x1A') + "MTrk\xFF\xFF\xFF\xFF garbage", "song.mid");
  ASSERT_EQ(padded.tracks.size(), 1u);
  EXPECT_EQ(padded.tracks[0].events, read_midi(data, "song.mid").tracks[0].events);
}

// What players do not read either stays an error naming the track, the byte and the reason.
TEST(MidiFile, WhatCannotBeReadIsAnErrorNamingTheByte) {
  const std::string note = bytes({0x00, 0x90, 60, 100}) + kEndOfTrack;  // track 1: bytes 22-29
  const std::vector<std::pair<std::string, std::string>> cases = {
      // Running status does not carry over to the next track (track 2's first event at byte 38).
      {smf(1, 96, {note, bytes({0x00, 62, 90}) + kEndOfTrack}),
       "song.mid: track 2 at byte 39: running status: data byte 0x3E with no channel message before it in the "
       "track, expected a status byte"},
      // A data byte with its top bit set, under running status, and in a track cut by the end of the file.
      {smf(1, 96, {bytes({0x00, 0x90, 60, 100, 0x10, 62, 0xC0}) + kEndOfTrack}),
       "song.mid: track 1 at byte 28: data byte 0xC0 has its top bit set, expected 0x00-0x7F"},
      {smf(1, 96, {bytes({0x00, 0x90, 60, 100, 0x00, 0x90, 0x80, 0}) + kEndOfTrack}).substr(0, 29),
       "song.mid: track 1 at byte 28: data byte 0x80 has its top bit set, expected 0x00-0x7F"},
      {smf(1, 96, {bytes({0x00, 0x90, 60, 100, 0x00, 0xF1}) + kEndOfTrack}).substr(0, 28),
       "song.mid: track 1 at byte 27: status byte 0xF1 is not allowed in a file (only channel messages, F0, F7 "
       "and FF)"},
      // A chunk that ends inside an event while the file goes on: the lengths disagree.
      {smf(1, 96, {bytes({0x00, 0x90, 60, 100, 0x00, 0x90, 62}), note}),
       "song.mid: track 1 at byte 29: truncated: a data byte expected, the data ends"},
      // No track at all: the header alone, or an unknown chunk then the end.
      {with_track_count(smf(1, 96, {}), 2),
       "song.mid: at byte 14: truncated: 2 tracks declared, the file ends before the first track chunk"},
      {smf(1, 96, {note}).replace(14, 4, "XTRA"),
       "song.mid: at byte 30: truncated: 1 track declared, the file ends before the first track chunk"},
  };
  for (const auto& [data, expected] : cases) EXPECT_EQ(error_of(data), expected);
}

TEST(MidiFile, WritingThenReadingGivesTheSameEvents) {
  for (const std::string& path : testing::corpus_files()) {
    SCOPED_TRACE(path);
    const MidiFile original = load_midi(path);
    const MidiFile again = read_midi(write_midi(original), "rewritten");
    EXPECT_EQ(again.format, original.format);
    EXPECT_EQ(again.ticks_per_quarter, original.ticks_per_quarter);
    ASSERT_EQ(again.tracks.size(), original.tracks.size());
    for (size_t t = 0; t < original.tracks.size(); ++t) EXPECT_EQ(again.tracks[t].events, original.tracks[t].events);
  }
}

// `part` is `whole` cut after some of its events, with an end of track at the last one's time.
bool is_cut_from(const MidiTrack& part, const MidiTrack& whole) {
  const std::vector<MidiEvent>& p = part.events;
  if (p.empty() || p.size() > whole.events.size() || !p.back().is_meta(kMetaEndOfTrack)) return false;
  const int64_t last_tick = p.size() > 1 ? p[p.size() - 2].tick : 0;
  return std::equal(p.begin(), p.end() - 1, whole.events.begin()) && (p == whole.events || p.back().tick == last_tick);
}

// Cut anywhere, a real file is an error naming it when the cut leaves no track chunk header,
// and otherwise reads as the tracks before the cut and the whole events of the track it cuts.
TEST(MidiFile, EveryTruncationOfARealFileReadsItsWholeEventsOrIsAnErrorNamingIt) {
  for (const std::string& path : testing::small_files()) {
    const std::string data = read_file(path);
    ASSERT_EQ(data.compare(14, 4, "MTrk"), 0) << path << ": a 14-byte header then a track chunk";
    const size_t first_track_events = 14 + 8;
    const MidiFile whole = read_midi(data, path);
    for (size_t cut = 0; cut < data.size(); ++cut) {
      SCOPED_TRACE(fmt::format("{} cut at {} of {}", path, cut, data.size()));
      MidiFile part;
      try {
        part = read_midi(data.substr(0, cut), path);
      } catch (const MidiError& e) {
        ASSERT_LT(cut, first_track_events) << e.what();
        ASSERT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
        continue;
      }
      ASSERT_GE(cut, first_track_events);
      ASSERT_FALSE(part.tracks.empty());
      ASSERT_LE(part.tracks.size(), whole.tracks.size());
      const size_t last = part.tracks.size() - 1;
      for (size_t t = 0; t < last; ++t) ASSERT_EQ(part.tracks[t].events, whole.tracks[t].events) << "track " << t;
      ASSERT_TRUE(is_cut_from(part.tracks[last], whole.tracks[last])) << "track " << last;
    }
  }
}

// 2000 damaged copies per file (1 to 4 random bytes replaced): each either fails with a
// MidiError or reads, and what reads goes through scores and tokens; none takes long.
TEST(MidiFile, ByteFlipsGiveAnErrorOrAFileNeverACrash) {
  std::mt19937_64 rng(17);
  const RemiVocabulary vocabulary;
  int errors = 0, reads = 0;
  for (const std::string& path : testing::small_files()) {
    const std::string data = read_file(path);
    for (int trial = 0; trial < 2000; ++trial) {
      std::string damaged = data;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) damaged[rng() % damaged.size()] = static_cast<char>(rng() & 0xFF);
      const auto start = std::chrono::steady_clock::now();
      try {
        const Score score = score_from_midi(read_midi(damaged, path));
        vocabulary.decode(vocabulary.encode(score));
        ++reads;
      } catch (const MidiError& e) {
        ASSERT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
        ++errors;
      }
      ASSERT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(reads, 0);
}

}  // namespace
}  // namespace spe::midi
