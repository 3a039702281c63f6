#pragma once
// Random generators for the stochastic parts of spe (SPE codes, gate noise, FAVOR+ features).
// Every sampling function takes an optional generator: pass one made by make_generator(seed)
// for reproducible draws, or nothing to use LibTorch's default generator.
#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace spe {

using OptionalGenerator = c10::optional<at::Generator>;

// A CPU generator seeded with `seed`: the same seed gives the same draws.
at::Generator make_generator(uint64_t seed);

}  // namespace spe
