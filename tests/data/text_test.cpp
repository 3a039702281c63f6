// Byte-level text tasks: tokens, splits that keep groups together, users' JSONL and CSV files
// (with the line of each mistake), the SpamAssassin and State of the Union corpora as installed
// by scripts/setup.sh (labels checked against the corpus files independently), Fashion-MNIST.
#include "spe/data/text.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "spe/data/image.h"
#include "spe/util/files.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace spe::data {
namespace {

namespace fs = std::filesystem;

const std::string kNpm = SPE_SOURCE_DIR "/data/npm/node_modules/@stdlib/";

using testing::scratch;

std::string text_of(TokenSpan span) {
  std::string text;
  for (size_t i = 0; i < span.size; ++i) text += static_cast<char>(span.data[i] - 1);
  return text;
}

TEST(Text, BytesBecomeTokensShiftedByOne) {
  EXPECT_EQ(byte_tokens(std::string("a\0\xff", 3), 10), (std::vector<uint16_t>{98, 1, 256}));
  EXPECT_EQ(byte_tokens("abcdef", 2), (std::vector<uint16_t>{98, 99}));
}

TEST(Text, SplitsKeepGroupsTogetherAndAreDeterministic) {
  std::vector<TextExample> examples;
  for (int i = 0; i < 200; ++i) examples.push_back({{"text " + std::to_string(i)}, i % 3 ? "b" : "a", "g" + std::to_string(i / 4)});
  SplitOptions options;
  options.seed = 5;
  const auto splits = split_text_examples("toy", examples, options, "test");
  EXPECT_EQ(splits[0].size() + splits[1].size() + splits[2].size(), 200);
  EXPECT_EQ(splits[0].info().class_names, (std::vector<std::string>{"a", "b"}));
  std::map<std::string, int> split_of_group;
  for (int s = 0; s < 3; ++s)
    for (int64_t i = 0; i < splits[static_cast<size_t>(s)].size(); ++i) {
      const int index = std::stoi(text_of(splits[static_cast<size_t>(s)].sequence(i)).substr(5));
      const std::string group = "g" + std::to_string(index / 4);
      EXPECT_TRUE(!split_of_group.count(group) || split_of_group[group] == s) << group << " is in two splits";
      split_of_group[group] = s;
      EXPECT_EQ(splits[static_cast<size_t>(s)].label(i), index % 3 ? 1 : 0);
    }
  EXPECT_EQ(split_of_group.size(), 50u);
  EXPECT_EQ(splits[2].serialize(), split_text_examples("toy", examples, options, "test")[2].serialize());
  EXPECT_ERROR_CONTAINS(split_text_examples("toy", {{{"x"}, "a", "1"}, {{"y"}, "a", "2"}, {{"z"}, "a", "3"}}, options, ""),
                        "1 distinct label(s)");
  options.test_fraction = 0.95;
  EXPECT_ERROR_CONTAINS(split_text_examples("toy", examples, options, ""), "must be positive with a sum below 1");
}

TEST(Text, ReadsUsersJsonlAndCsvFiles) {
  const fs::path jsonl = scratch("mine.jsonl"), csv = scratch("mine.csv");
  write_file_atomically(jsonl.string(),
                        "{\"text\": \"first\", \"label\": \"pos\"}\n\n{\"text\": \"second\", \"label\": 3, \"other\": 1}\n");
  const auto j = read_labelled_file(jsonl.string(), {"text"}, "label");
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1].texts[0], "second");
  EXPECT_EQ(j[1].label, "3");
  write_file_atomically(csv.string(), "a,b,label\n\"one, with comma\",x,yes\n\"two\nlines\",\"say \"\"hi\"\"\",no\n");
  const auto c = read_labelled_file(csv.string(), {"a", "b"}, "label");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].texts[0], "one, with comma");
  EXPECT_EQ(c[1].texts[0], "two\nlines");
  EXPECT_EQ(c[1].texts[1], "say \"hi\"");
  EXPECT_EQ(c[1].label, "no");
}

TEST(Text, MistakesInUsersFilesNameTheLine) {
  auto fails = [](const std::string& name, const std::string& contents, const std::vector<std::string>& fields,
                  const std::string& expected) {
    const fs::path path = scratch(name);
    write_file_atomically(path.string(), contents);
    EXPECT_ERROR_CONTAINS(read_labelled_file(path.string(), fields, "label"), path.string() + expected);
  };
  fails("a.jsonl", "{\"text\": \"x\", \"label\": \"a\"}\n{\"text\": \"x\"\n", {"text"}, ":2: not a JSON object");
  fails("b.jsonl", "{\"text\": \"x\", \"label\": \"a\"}\n{\"label\": \"a\"}\n", {"text"}, ":2: the record has no text field 'text'");
  fails("c.jsonl", "{\"text\": 5, \"label\": \"a\"}\n", {"text"}, ":1: field 'text' is not a string");
  fails("d.jsonl", "{\"text\": \"x\", \"label\": \"\"}\n", {"text"}, ":1: the record has no label in field 'label'");
  fails("e.csv", "text,label\nx,a\ny\n", {"text"}, ":3: 1 fields, the header has 2");
  fails("f.csv", "text,label\nx,a\n\"y,b\n", {"text"}, ":3: not valid CSV");
  fails("g.csv", "txt,label\nx,a\n", {"text"}, ":2: the record has no text field 'text'");
  fails("h.txt", "x", {"text"}, "': expected a .jsonl, .json (JSON lines) or .csv file");
  EXPECT_ERROR_CONTAINS(read_labelled_file("/nonexistent.csv", {"text"}, "label"), "cannot open '/nonexistent.csv'");
}

TEST(Text, SpamAssassinLabelsFollowTheFolders) {
  const std::string root = kNpm + "datasets-spam-assassin";
  ASSERT_TRUE(fs::exists(root)) << "run scripts/setup.sh: it installs the corpus into data/npm";
  std::map<std::string, int> files_per_label;
  for (const auto& entry : fs::recursive_directory_iterator(root + "/data"))
    if (entry.path().extension() == ".txt")
      ++files_per_label[entry.path().parent_path().filename().string().substr(0, 4) == "spam" ? "spam" : "ham"];
  const auto examples = read_spam_assassin(root);
  std::map<std::string, int> read_per_label;
  for (const auto& e : examples) ++read_per_label[e.label];
  EXPECT_EQ(read_per_label, files_per_label);
  EXPECT_EQ(examples.size(), 6046u);
  EXPECT_ERROR_CONTAINS(read_spam_assassin("/nonexistent"), "no SpamAssassin corpus at '/nonexistent'");
}

TEST(Retrieval, PairsAreLabelledBySpeakerAndSplitsShareNoPassage) {
  const std::string root = kNpm + "datasets-sotu";
  ASSERT_TRUE(fs::exists(root)) << "run scripts/setup.sh: it installs the corpus into data/npm";
  RetrievalOptions options;
  options.passage_length = 1000;
  options.split.max_length = 1000;
  options.train_pairs = 300;
  options.valid_pairs = options.test_pairs = 100;
  const auto splits = make_sotu_retrieval(root, options);
  // Independently: which speakers' speeches contain each passage.
  std::vector<std::pair<std::string, std::string>> speeches;  // (speaker, text)
  for (const auto& entry : fs::directory_iterator(root + "/data")) {
    if (entry.path().extension() != ".json") continue;
    const auto record = nlohmann::json::parse(read_file(entry.path().string()));
    std::string text;
    if (record["text"].is_array())
      for (const auto& p : record["text"]) text += p.get<std::string>() + "\n";
    else
      text = record["text"].get<std::string>();
    speeches.emplace_back(record["name"].get<std::string>(), text);
  }
  auto speakers_of = [&](const std::string& passage) {
    std::set<std::string> speakers;
    for (const auto& [speaker, text] : speeches)
      if (text.find(passage) != std::string::npos) speakers.insert(speaker);
    return speakers;
  };
  std::map<std::string, int> split_of_passage;
  for (int s = 0; s < 3; ++s) {
    const Dataset& d = splits[static_cast<size_t>(s)];
    int same = 0;
    for (int64_t i = 0; i < d.size(); ++i) {
      const std::string a = text_of(d.sequence(i, 0)), b = text_of(d.sequence(i, 1));
      for (const std::string& p : {a, b}) {
        EXPECT_TRUE(!split_of_passage.count(p) || split_of_passage[p] == s) << "a passage is in two splits";
        split_of_passage[p] = s;
      }
      if (i < 40) {  // the substring search is slow; the first pairs of each split suffice
        const auto sa = speakers_of(a), sb = speakers_of(b);
        ASSERT_EQ(sa.size(), 1u);
        EXPECT_EQ(d.label(i), sa == sb ? 1 : 0) << "pair " << i;
      }
      same += d.label(i);
    }
    EXPECT_EQ(same, d.size() / 2);
  }
  EXPECT_EQ(make_sotu_retrieval(root, options)[1].serialize(), splits[1].serialize());  // deterministic
  options.split.seed = 2;
  EXPECT_NE(make_sotu_retrieval(root, options)[1].serialize(), splits[1].serialize());
}

TEST(Image, FashionMnistHasItsKnownShapeAndBalancedTestSet) {
  ImageOptions options;
  options.train = 1000;
  options.valid = 500;
  ASSERT_TRUE(fs::exists(options.dir)) << "run scripts/setup.sh: it installs dataset-fashion-mnist";
  const auto splits = make_fashion_mnist(options);
  EXPECT_EQ(splits[0].size(), 1000);
  EXPECT_EQ(splits[1].size(), 500);
  ASSERT_EQ(splits[2].size(), 10000);
  EXPECT_EQ(splits[2].info().grid, (std::vector<int64_t>{28, 28}));
  std::vector<int> per_class(10);
  for (int64_t i = 0; i < splits[2].size(); ++i) ++per_class[static_cast<size_t>(splits[2].label(i))];
  EXPECT_EQ(per_class, std::vector<int>(10, 1000));  // Fashion-MNIST's test set is balanced
  const TokenSpan image = splits[2].sequence(0);
  ASSERT_EQ(image.size, 784u);
  EXPECT_EQ(*std::min_element(image.data, image.data + 784), 1);  // black background: grey 0 -> token 1
  EXPECT_EQ(make_fashion_mnist(options)[1].serialize(), splits[1].serialize());  // deterministic
  std::set<std::vector<uint16_t>> train_images;
  for (int64_t i = 0; i < splits[0].size(); ++i)
    train_images.emplace(splits[0].sequence(i).data, splits[0].sequence(i).data + 784);
  for (int64_t i = 0; i < splits[1].size(); ++i)  // validation images are held out of training
    EXPECT_EQ(train_images.count(std::vector<uint16_t>(splits[1].sequence(i).data, splits[1].sequence(i).data + 784)), 0u);
  options.valid = 60000;
  EXPECT_ERROR_CONTAINS(make_fashion_mnist(options), "valid 60000 must lie in [1, 60000)");
}

TEST(Image, IdxFilesAreCheckedForDamage) {
  const fs::path idx = scratch("tiny.idx");
  std::string bytes = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
  write_file_atomically(idx.string(), bytes);
  const IdxArray array = read_idx(idx.string());
  EXPECT_EQ(array.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array.values[5], 6);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    write_file_atomically(idx.string(), bytes.substr(0, cut));
    EXPECT_THROW(read_idx(idx.string()), std::runtime_error) << "cut at " << cut;
  }
  write_file_atomically(idx.string(), std::string("\x1f\x8b\x08\x00garbage", 11));
  EXPECT_ERROR_CONTAINS(read_idx(idx.string()), "is not a complete gzip file");
}

}  // namespace
}  // namespace spe::data
