// The MIDI reader on hand-built files (every kind of event, every structural error) and on
// damaged real files: every truncation point is an error naming the file, byte flips never crash.
#include "spe/midi/midi_file.h"

#include <gtest/gtest.h>

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
  const std::string body = bytes({0x00, 0x90, 60, 100,         // note on, channel 0
                                  0x10, 62, 90,                // running status: another note on
                                  0x08, 60, 0,                 // running status, velocity 0: note off
                                  0x00, 0xC3, 5,               // program change, channel 3 (one data byte)
                                  0x00, 0xF0, 0x03, 1, 2, 0xF7,  // sysex
                                  0x00, 62, 0,                 // running status was cancelled by the sysex
                                  0x81, 0x00, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20}) +  // delta 128, tempo
                           kEndOfTrack;
  const std::string data = smf(1, 96, {body});
  const std::string error = error_of(data);
  EXPECT_NE(error.find("running status with no previous status byte"), std::string::npos) << error;
  // Without the offending event the file reads, with every field as written.
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
      {smf(1, 96, {bytes({0x00, 0x90, 60, 100})}), "no end-of-track event"},
      {smf(1, 96, {bytes({0x00, 0xFF, 0x01, 0x7F, 'a'}) + kEndOfTrack}), "meta event declares 127 bytes"},
      {smf(1, 96, {track}).substr(0, 20), "truncated"},
      {smf(1, 96, {track, track}).substr(0, 14 + 8 + track.size()), "2 tracks declared, 1 found"},
  };
  for (const auto& [data, expected] : cases) {
    const std::string error = error_of(data);
    EXPECT_NE(error.find(expected), std::string::npos) << "expected \"" << expected << "\", got: " << error;
    EXPECT_EQ(error.rfind("song.mid: ", 0), 0u) << error;
  }
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

TEST(MidiFile, EveryTruncationOfARealFileIsAnErrorNamingIt) {
  for (const std::string& path : testing::small_files()) {
    const std::string data = read_file(path);
    for (size_t cut = 0; cut < data.size(); ++cut) {
      const std::string error = [&] {
        try {
          read_midi(data.substr(0, cut), path);
        } catch (const MidiError& e) {
          return std::string(e.what());
        }
        return std::string("no error");
      }();
      ASSERT_EQ(error.rfind(path + ": ", 0), 0u) << "cut at " << cut << " of " << data.size() << ": " << error;
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
