#pragma once
// Random generators for the stochastic parts of spe (SPE codes, gate noise, FAVOR+ features).
// Every sampling function takes an optional generator: pass one made by make_generator(seed)
// for reproducible draws, or nothing to use LibTorch's default generator.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace spe {

using OptionalGenerator = c10::optional<at::Generator>;

// A CPU generator seeded with `seed`: the same seed gives the same draws.
at::Generator make_generator(uint64_t seed);

// An independent generator in the state of `generator`: the same draws from here on. (LibTorch
// 1.13's Generator::clone() never frees its copy; this one is freed like any generator.)
at::Generator copy_generator(const at::Generator& generator);

// A 64-bit key drawn from the generator (or the default one), for keyed_normal_rows.
uint64_t draw_key(OptionalGenerator generator = c10::nullopt);

// Standard normal noise that is a pure function of (key, row): rows first_row ..
// first_row + rows - 1, each of `width` values -> (rows, width). A row is the same whichever
// range it is drawn in, so noise indexed by position can be extended one position at a time
// (convSPE decoding) and still equal the noise of a whole sequence drawn at once.
at::Tensor keyed_normal_rows(uint64_t key, int64_t first_row, int64_t rows, int64_t width,
                             const at::TensorOptions& options);

// Row `row` of keyed_normal_rows(key, ...) written into `out` (its `width` values: contiguous, on
// the CPU), drawn by `scratch`, a CPU generator reseeded for the row: nothing is allocated.
void keyed_normal_row_into(uint64_t key, int64_t row, at::Tensor& out, at::Generator& scratch);

}  // namespace spe
