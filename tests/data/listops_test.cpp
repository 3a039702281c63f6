// ListOps: the generator's values against an independent stack evaluator, hand-checked
// expressions, the length/depth/arity constraints, determinism and split disjointness.
#include "spe/data/listops.h"

#include <gtest/gtest.h>

#include <set>

#include "support/errors.h"

namespace spe::data {
namespace {

std::vector<uint16_t> parse(const std::string& text) {
  std::vector<uint16_t> tokens;
  std::istringstream in(text);
  for (std::string word; in >> word;) {
    if (word == "[MIN") tokens.push_back(kListOpsMin);
    else if (word == "[MAX") tokens.push_back(kListOpsMax);
    else if (word == "[MED") tokens.push_back(kListOpsMed);
    else if (word == "[SM") tokens.push_back(kListOpsSum);
    else if (word == "]") tokens.push_back(kListOpsClose);
    else tokens.push_back(static_cast<uint16_t>(kListOpsDigit0 + std::stoi(word)));
  }
  return tokens;
}

int eval_text(const std::string& text) {
  const auto tokens = parse(text);
  return evaluate_listops(tokens.data(), tokens.size());
}

TEST(ListOps, EvaluatesHandCheckedExpressions) {
  EXPECT_EQ(eval_text("7"), 7);
  EXPECT_EQ(eval_text("[MIN 4 2 9 ]"), 2);
  EXPECT_EQ(eval_text("[MAX 4 2 9 ]"), 9);
  EXPECT_EQ(eval_text("[MED 4 2 9 ]"), 4);
  EXPECT_EQ(eval_text("[MED 4 1 9 8 ]"), 6);  // (4 + 8) / 2
  EXPECT_EQ(eval_text("[MED 3 4 ]"), 3);      // floor(3.5)
  EXPECT_EQ(eval_text("[SM 9 8 7 ]"), 4);     // 24 mod 10
  EXPECT_EQ(eval_text("[MAX 2 9 [MIN 4 7 ] 0 ]"), 9);
  EXPECT_EQ(eval_text("[SM [MAX 3 8 ] [MIN 6 [MED 1 5 9 ] ] 2 ]"), 5);  // 8 + 5 + 2 = 15
  const auto tokens = parse("[MAX 2 9 [MIN 4 7 ] 0 ]");
  EXPECT_EQ(listops_to_string(tokens.data(), tokens.size()), "[MAX 2 9 [MIN 4 7 ] 0 ]");
}

TEST(ListOps, RejectsMalformedExpressions) {
  auto eval_tokens = [](std::vector<uint16_t> t) { return evaluate_listops(t.data(), t.size()); };
  EXPECT_ERROR_CONTAINS(eval_tokens(parse("[MIN 4 2")), "1 brackets left open");
  EXPECT_ERROR_CONTAINS(eval_tokens(parse("[MIN 4 ] ]")), "token 3 follows a complete expression");
  EXPECT_ERROR_CONTAINS(eval_tokens(parse("]")), "closes a bracket never opened");
  EXPECT_ERROR_CONTAINS(eval_tokens(parse("[SM ]")), "without arguments");
  EXPECT_ERROR_CONTAINS(eval_tokens({}), "empty expression");
  EXPECT_ERROR_CONTAINS(eval_tokens({kListOpsMin, 0, kListOpsClose}), "token 1 has id 0");
}

// Depth and arity as a parser sees them.
struct Shape {
  int64_t max_depth = 0, min_args = 1 << 30, max_args = 0;
};
Shape shape_of(const std::vector<uint16_t>& tokens) {
  Shape s;
  std::vector<int64_t> args;
  for (uint16_t t : tokens) {
    if (t >= kListOpsMin && t <= kListOpsSum) {
      if (!args.empty()) ++args.back();
      args.push_back(0);
      s.max_depth = std::max<int64_t>(s.max_depth, static_cast<int64_t>(args.size()));
    } else if (t == kListOpsClose) {
      s.min_args = std::min(s.min_args, args.back());
      s.max_args = std::max(s.max_args, args.back());
      args.pop_back();
    } else if (!args.empty()) {
      ++args.back();
    }
  }
  return s;
}

TEST(ListOps, GeneratedValuesMatchTheEvaluatorWithinTheConstraints) {
  ListOpsOptions options;
  options.min_length = 100;
  options.max_length = 400;
  options.max_depth = 6;
  options.max_args = 5;
  std::mt19937_64 rng(3);
  std::set<int> values;
  for (int i = 0; i < 500; ++i) {
    const ListOpsExample e = generate_listops(options, rng);
    ASSERT_EQ(evaluate_listops(e.tokens.data(), e.tokens.size()), e.value) << listops_to_string(e.tokens.data(), e.tokens.size());
    ASSERT_GE(static_cast<int64_t>(e.tokens.size()), options.min_length);
    ASSERT_LE(static_cast<int64_t>(e.tokens.size()), options.max_length);
    const Shape s = shape_of(e.tokens);
    ASSERT_LE(s.max_depth, options.max_depth);
    ASSERT_GE(s.min_args, options.min_args);
    ASSERT_LE(s.max_args, options.max_args);
    values.insert(e.value);
  }
  EXPECT_EQ(values.size(), 10u);  // every class occurs
}

TEST(ListOps, DatasetsAreDeterministicLabelledAndSplitsDisjoint) {
  ListOpsOptions options;
  options.min_length = 50;
  options.max_length = 200;
  const Dataset train = make_listops_dataset(options, 200, 11, "train");
  EXPECT_EQ(train.serialize(), make_listops_dataset(options, 200, 11, "train").serialize());
  EXPECT_NE(train.serialize(), make_listops_dataset(options, 200, 12, "train").serialize());
  const Dataset test = make_listops_dataset(options, 200, 11, "test");
  std::set<std::vector<uint16_t>> seen;
  for (int64_t i = 0; i < train.size(); ++i) {
    const TokenSpan s = train.sequence(i);
    EXPECT_EQ(evaluate_listops(s.data, s.size), train.label(i));
    seen.emplace(s.data, s.data + s.size);
  }
  for (int64_t i = 0; i < test.size(); ++i) {
    const TokenSpan s = test.sequence(i);
    EXPECT_EQ(evaluate_listops(s.data, s.size), test.label(i));
    EXPECT_EQ(seen.count(std::vector<uint16_t>(s.data, s.data + s.size)), 0u) << "test example " << i << " is in train";
  }
  EXPECT_EQ(train.info().vocab_size, kListOpsVocabSize);
  EXPECT_EQ(train.info().num_classes, 10);
}

TEST(ListOps, RejectsImpossibleOptions) {
  ListOpsOptions o;
  o.min_length = 3000;
  o.max_length = 2000;
  EXPECT_ERROR_CONTAINS(check_listops_options(o), "length range [3000, 2000]");
  o = ListOpsOptions();
  o.max_depth = 2;
  o.max_args = 3;
  EXPECT_ERROR_CONTAINS(check_listops_options(o), "depth 2 and 3 arguments cannot reach 500 tokens");
  o = ListOpsOptions();
  o.min_args = 5;
  o.max_args = 4;
  EXPECT_ERROR_CONTAINS(check_listops_options(o), "min (5) <= max (4)");
}

}  // namespace
}  // namespace spe::data
