#pragma once
// A tokenised dataset in spe's binary format: sequences (or pairs of sequences, for matching)
// of token ids with a class label each. `spe data <task>` writes one file per split; training
// and evaluation read them. Token 0 is always padding.
//
// File layout (little-endian), format version 1:
//   8 bytes   magic "SPEDATA\0"
//   u32       format version
//   u32       header length h, then h bytes of JSON (DatasetInfo and the example count)
//   i32[n]    labels
//   u32[n*f]  sequence lengths, example-major (f = fields: 1, or 2 for pairs)
//   u16[...]  tokens, all sequences concatenated
//   u64       FNV-1a checksum of every byte before it
// A truncated, extended, corrupted or foreign file is refused with an error naming it.
#include <cstdint>
#include <string>
#include <vector>

namespace spe::data {

constexpr uint16_t kPadToken = 0;

struct DatasetInfo {
  std::string task;                     // "listops", "text", "retrieval", "image", ...
  std::string split;                    // "train", "valid", "test"
  int64_t vocab_size = 0;               // token ids lie in [0, vocab_size); 0 is padding
  int64_t num_classes = 0;              // labels lie in [0, num_classes)
  int64_t fields = 1;                   // sequences per example: 1, or 2 for pair matching
  std::vector<int64_t> grid;            // e.g. {28, 28}: sequences are row-major images
  std::vector<std::string> class_names; // optional, one per class
  std::string source;                   // how the examples were made (generator, seed, files)
};

// Whether a model made for one dataset can read the other: the same vocabulary size, classes,
// fields and grid (task names and splits may differ).
bool same_model_inputs(const DatasetInfo& a, const DatasetInfo& b);

struct TokenSpan {
  const uint16_t* data;
  size_t size;
};

class Dataset {
 public:
  explicit Dataset(DatasetInfo info);

  // Appends one example: `info.fields` sequences and its label; tokens and label are checked.
  void add(int32_t label, const std::vector<std::vector<uint16_t>>& sequences);

  const DatasetInfo& info() const { return info_; }
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  int32_t label(int64_t example) const { return labels_.at(static_cast<size_t>(example)); }
  TokenSpan sequence(int64_t example, int64_t field = 0) const;
  int64_t total_tokens() const { return static_cast<int64_t>(tokens_.size()); }

  std::string serialize() const;
  static Dataset deserialize(const std::string& bytes, const std::string& name);
  void save(const std::string& path) const;  // atomically: a reader never sees half a file
  static Dataset load(const std::string& path);

 private:
  DatasetInfo info_;
  std::vector<int32_t> labels_;
  std::vector<uint64_t> starts_;  // example-major start of each sequence in tokens_, plus the end
  std::vector<uint16_t> tokens_;
};

// The file of one split inside a data folder: DIR/SPLIT.bin.
std::string split_path(const std::string& dir, const std::string& split);

}  // namespace spe::data
