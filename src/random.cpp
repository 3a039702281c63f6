#include "spe/random.h"

#include <ATen/CPUGeneratorImpl.h>

namespace spe {

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

}  // namespace spe
