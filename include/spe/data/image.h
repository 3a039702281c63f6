#pragma once
// Images as sequences: Fashion-MNIST (Debian's dataset-fashion-mnist, gzipped IDX files) as
// 784 grey-level tokens per image in row-major order (grey level g is token g + 1; vocabulary
// 257), with the 28 x 28 grid recorded for 2-D convSPE. 10 classes.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "spe/data/dataset.h"

namespace spe::data {

// An IDX file (optionally gzipped): the dimensions and the unsigned bytes. A truncated or
// malformed file is an error naming it.
struct IdxArray {
  std::vector<int64_t> shape;
  std::vector<uint8_t> values;
};
IdxArray read_idx(const std::string& path);

struct ImageOptions {
  std::string dir = "/usr/share/datasets/fashion-mnist";
  int64_t train = 0;           // training images kept (0: all that are not validation)
  int64_t valid = 5000;        // taken from the training file
  int64_t test = 0;            // test images kept (0: all 10000)
  uint64_t seed = 1;
};

// train, valid, test.
std::array<Dataset, 3> make_fashion_mnist(const ImageOptions& options);

}  // namespace spe::data
