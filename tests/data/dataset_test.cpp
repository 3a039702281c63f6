// The dataset file format (round trip; every truncation point and every byte flip refused with
// an error), batching and the epoch sampler.
#include "spe/data/dataset.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "spe/data/batch.h"
#include "spe/util/hash.h"
#include "support/errors.h"

namespace spe::data {
namespace {

Dataset small_pairs() {
  DatasetInfo info;
  info.task = "toy";
  info.split = "train";
  info.vocab_size = 300;
  info.num_classes = 3;
  info.fields = 2;
  info.class_names = {"a", "b", "c"};
  Dataset d(info);
  d.add(2, {{5, 6, 7}, {299}});
  d.add(0, {{}, {1, 2}});
  d.add(1, {{9, 8, 7, 6, 5}, {4, 4, 4}});
  return d;
}

TEST(Dataset, RoundTripsThroughItsFileFormat) {
  const Dataset d = small_pairs();
  const Dataset back = Dataset::deserialize(d.serialize(), "mem");
  EXPECT_EQ(back.serialize(), d.serialize());
  EXPECT_EQ(back.size(), 3);
  EXPECT_EQ(back.info().class_names, d.info().class_names);
  EXPECT_EQ(back.label(0), 2);
  EXPECT_EQ(back.sequence(0, 1).size, 1u);
  EXPECT_EQ(back.sequence(0, 1).data[0], 299);
  EXPECT_EQ(back.sequence(1, 0).size, 0u);
  EXPECT_EQ(back.sequence(2, 0).data[4], 5);
}

// Found by fuzz_dataset: a header number like 4e45 was converted to an integer unchecked (UB).
TEST(Dataset, HeaderNumbersMustBeIntegers) {
  const std::string bytes = small_pairs().serialize();
  uint32_t length = 0;
  std::memcpy(&length, bytes.data() + 12, 4);
  const std::string header = bytes.substr(16, length);
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"\"vocab_size\":300", "\"vocab_size\":4e45"}, {"\"fields\":2", "\"fields\":2.0"}, {"\"grid\":[]", "\"grid\":[1.5]"}}) {
    std::string changed = header;
    ASSERT_NE(changed.find(from), std::string::npos) << header;
    changed.replace(changed.find(from), from.size(), to);
    const uint32_t new_length = static_cast<uint32_t>(changed.size());
    std::string file = bytes.substr(0, 12) + std::string(reinterpret_cast<const char*>(&new_length), 4) + changed +
                       bytes.substr(16 + length, bytes.size() - 8 - 16 - length);
    const uint64_t checksum = fnv1a(file);
    file.append(reinterpret_cast<const char*>(&checksum), 8);
    EXPECT_ERROR_CONTAINS(Dataset::deserialize(file, "odd.bin"), "expected an integer");
  }
}

TEST(Dataset, EveryTruncationAndEveryByteFlipIsRefused) {
  const std::string bytes = small_pairs().serialize();
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_THROW(Dataset::deserialize(bytes.substr(0, cut), "cut"), std::exception) << "cut at " << cut;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x20);
    EXPECT_THROW(Dataset::deserialize(flipped, "flip"), std::exception) << "flip at " << i;
  }
  EXPECT_ERROR_CONTAINS(Dataset::deserialize(bytes + "x", "long"), "1 unexpected bytes after its end");
  EXPECT_ERROR_CONTAINS(Dataset::deserialize("hello world, not data", "text.txt"), "'text.txt' is not an spe dataset");
  std::string newer = bytes;
  newer[8] = 2;
  EXPECT_ERROR_CONTAINS(Dataset::deserialize(newer, "new"), "format version 2; this spe reads version 1 (it was written by a newer spe)");
  EXPECT_ERROR_CONTAINS(Dataset::deserialize(bytes.substr(0, bytes.size() - 3), "short"), "truncated");
  EXPECT_ERROR_CONTAINS(Dataset::load("/nonexistent/train.bin"), "cannot open '/nonexistent/train.bin'");
}

TEST(Dataset, AddChecksItsInput) {
  Dataset d = small_pairs();
  EXPECT_ERROR_CONTAINS(d.add(0, {{1}}), "1 sequences given, the dataset has 2");
  EXPECT_ERROR_CONTAINS(d.add(3, {{1}, {1}}), "label 3 outside [0, 3)");
  EXPECT_ERROR_CONTAINS(d.add(0, {{300}, {1}}), "token 300 outside the vocabulary [0, 300)");
  EXPECT_ERROR_CONTAINS(d.sequence(3, 0), "has 3 examples");
  DatasetInfo bad;
  bad.vocab_size = 70000;
  EXPECT_ERROR_CONTAINS(Dataset{bad}, "vocab_size is 70000");
}

TEST(Batch, PadsTruncatesAndKeepsLabels) {
  const Dataset d = small_pairs();
  const Batch b = make_batch(d, {2, 0, 1}, 4);
  ASSERT_EQ(b.tokens.sizes(), (at::IntArrayRef{3, 4}));
  EXPECT_TRUE(at::equal(b.tokens[0], at::tensor({9, 8, 7, 6}, at::kLong)));  // truncated to 4
  EXPECT_TRUE(at::equal(b.tokens[1], at::tensor({5, 6, 7, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(b.padding[1], at::tensor({1, 1, 1, 0}).to(at::kBool)));
  EXPECT_FALSE(b.padding[2].any().item<bool>());  // the empty sequence
  ASSERT_EQ(b.tokens_b.sizes(), (at::IntArrayRef{3, 3}));
  EXPECT_TRUE(at::equal(b.tokens_b[1], at::tensor({299, 0, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(b.labels, at::tensor({1, 2, 0}, at::kLong)));
  EXPECT_ERROR_CONTAINS(make_batch(d, {}, 4), "no examples");
}

TEST(EpochSampler, VisitsEveryExampleOncePerEpochInNewOrders) {
  EpochSampler sampler(10, 5);
  std::vector<int64_t> first = sampler.next(10), second = sampler.next(10);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 10u);
  EXPECT_EQ(std::set<int64_t>(second.begin(), second.end()).size(), 10u);
  EXPECT_NE(first, second);
  EXPECT_EQ(sampler.position().epoch, 1);
}

TEST(EpochSampler, RanksGetDisjointShardsAndPositionsRestoreExactly) {
  EpochSampler rank0(11, 5, 0, 2), rank1(11, 5, 1, 2);
  std::vector<int64_t> a = rank0.next(5), b = rank1.next(5);
  std::set<int64_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 10u);  // disjoint; the 11th example waits for the next epoch's order
  EpochSampler sampler(10, 9);
  sampler.next(7);
  const auto position = sampler.position();
  const std::vector<int64_t> expected = sampler.next(8);
  EpochSampler restored(10, 9);
  restored.set_position(position);
  EXPECT_EQ(restored.next(8), expected);
  EXPECT_ERROR_CONTAINS(EpochSampler(1, 0, 0, 2), "1 examples cannot be shared among 2 ranks");
  EXPECT_ERROR_CONTAINS(restored.set_position({0, 11}), "outside a shard of 10");
}

}  // namespace
}  // namespace spe::data
