// The whole Debian corpus (84 files) through scores and tokens, and songs rendered by MMA.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <set>

#include "midi_support.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"
#include "spe/util/files.h"

namespace spe::midi {
namespace {

const RemiVocabulary kCorpusVocabulary;

std::vector<uint16_t> tokens_of(const MidiFile& file) { return kCorpusVocabulary.encode(score_from_midi(file)); }

// Re-encoding a decoded file gives the same tokens: quantisation is the only loss.
TEST(Corpus, EveryFileRoundTripsThroughTokens) {
  const auto files = testing::corpus_files();
  ASSERT_EQ(files.size(), 84u) << "openttd-openmsx and simutrans-data install 31 + 53 files";
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    const std::vector<uint16_t> tokens = tokens_of(load_midi(path));
    ASSERT_GT(tokens.size(), 100u);
    for (uint16_t t : tokens) ASSERT_LT(t, kCorpusVocabulary.size());
    const RemiDecoding decoded = kCorpusVocabulary.decode(tokens);
    EXPECT_EQ(decoded.skipped, 0);
    const MidiFile rewritten = read_midi(write_midi(midi_from_score(decoded.score)), "rewritten");
    EXPECT_EQ(tokens_of(rewritten), tokens);
  }
}

TEST(Corpus, EveryPrefixOfARealTokenSequenceDecodes) {
  const std::vector<uint16_t> tokens = tokens_of(load_midi(testing::small_files()[0]));
  size_t previous_notes = 0;
  for (size_t n = 0; n <= tokens.size(); ++n) {
    const RemiDecoding d = kCorpusVocabulary.decode(std::vector<uint16_t>(tokens.begin(), tokens.begin() + static_cast<long>(n)));
    EXPECT_EQ(d.skipped, 0);
    ASSERT_GE(d.score.notes.size(), previous_notes);  // a longer prefix never loses notes
    previous_notes = d.score.notes.size();
  }
}

TEST(Corpus, MmaSongsRenderDeterministically) {
  if (!std::filesystem::exists("/usr/bin/mma")) GTEST_SKIP() << "mma is not installed (scripts/setup.sh installs it)";
  const auto folder = std::filesystem::temp_directory_path() / ("spe_mma_test_" + std::to_string(::getpid()));
  const auto first = render_mma_songs((folder / "a").string(), 3, 5);
  const auto again = render_mma_songs((folder / "b").string(), 3, 5);
  const auto other = render_mma_songs((folder / "c").string(), 3, 6);
  ASSERT_EQ(first.size(), 3u);
  // The files name the chart they came from, so the music is compared, not the bytes.
  for (size_t i = 0; i < first.size(); ++i) {
    const std::vector<uint16_t> tokens = tokens_of(load_midi(first[i]));
    EXPECT_EQ(tokens, tokens_of(load_midi(again[i]))) << first[i];
    EXPECT_NE(tokens, tokens_of(load_midi(other[i]))) << first[i];
    const Score score = score_from_midi(load_midi(first[i]));
    EXPECT_GT(score.notes.size(), 50u) << first[i];
    std::set<int> programs;
    for (const Note& note : score.notes) programs.insert(note.program);
    EXPECT_GE(programs.size(), 2u) << first[i] << ": an accompaniment has several instruments";
  }
  std::filesystem::remove_all(folder);
}

TEST(Corpus, GroovesComeFromTheStandardLibrary) {
  if (!std::filesystem::exists("/usr/share/mma/lib/stdlib")) GTEST_SKIP() << "mma is not installed";
  const auto grooves = mma_grooves();
  EXPECT_GT(grooves.size(), 100u);
  EXPECT_TRUE(std::find(grooves.begin(), grooves.end(), "Swing") != grooves.end());
  for (const auto& g : grooves) EXPECT_EQ(g.find("Intro"), std::string::npos) << g;
  EXPECT_THROW(mma_grooves("/nonexistent"), std::runtime_error);
}

}  // namespace
}  // namespace spe::midi
