#pragma once
// ListOps (Nangia & Bowman 2018, as in Long-Range Arena): nested lists of operators over digits,
// e.g. [MAX 2 9 [MIN 4 7 ] 0 ], labelled with their value (10 classes). Generated here.
//   MIN, MAX: the smallest, largest argument
//   MED:      the median; for an even count, the floor of the mean of the two middle values
//   SM:       the sum modulo 10
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "spe/data/dataset.h"

namespace spe::data {

// Token ids: 0 padding, 1..10 the digits 0..9, then the operators with their opening bracket,
// then the closing bracket.
enum ListOpsToken : uint16_t {
  kListOpsDigit0 = 1,
  kListOpsMin = 11,
  kListOpsMax = 12,
  kListOpsMed = 13,
  kListOpsSum = 14,
  kListOpsClose = 15,
  kListOpsVocabSize = 16,
};

struct ListOpsOptions {
  int64_t min_length = 500;  // tokens per expression, inclusive range
  int64_t max_length = 2000;
  int64_t max_depth = 10;    // operator nesting
  int64_t min_args = 2;      // arguments per operator
  int64_t max_args = 10;
};

void check_listops_options(const ListOpsOptions& options);

// One random expression whose length lies in [min_length, max_length], and its value.
struct ListOpsExample {
  std::vector<uint16_t> tokens;
  int value;
};
ListOpsExample generate_listops(const ListOpsOptions& options, std::mt19937_64& rng);

// The value of an expression, computed independently of the generator by a stack machine;
// throws std::invalid_argument saying where a malformed expression goes wrong.
int evaluate_listops(const uint16_t* tokens, size_t length);

std::string listops_to_string(const uint16_t* tokens, size_t length);

// `count` examples for one split; the same (options, seed, split) give the same file.
Dataset make_listops_dataset(const ListOpsOptions& options, int64_t count, uint64_t seed, const std::string& split);

}  // namespace spe::data
