#include "spe/random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <limits>
#include <mutex>

namespace spe {
namespace {

// SplitMix64's finaliser: a bijection of 64-bit words that scrambles every input bit.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The seed of row `row` of the noise keyed by `key`: rows are independent streams.
uint64_t row_seed(uint64_t key, int64_t row) { return mix64(key ^ mix64(static_cast<uint64_t>(row))); }

}  // namespace

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Generator copy_generator(const at::Generator& generator) {
  TORCH_CHECK(generator.device().is_cpu(), "copy_generator: a CPU generator is expected, got one on ", generator.device());
  at::Generator copy = at::detail::createCPUGenerator();
  at::Generator source = generator;  // another handle to the same generator, for its lock
  std::lock_guard<std::mutex> lock(source.mutex());
  copy.set_state(source.get_state());
  return copy;
}

uint64_t draw_key(OptionalGenerator generator) {
  const at::Tensor word = at::empty({1}, at::kLong).random_(0, std::numeric_limits<int64_t>::max(), generator);
  return static_cast<uint64_t>(word.item<int64_t>());
}

at::Tensor keyed_normal_rows(uint64_t key, int64_t first_row, int64_t rows, int64_t width,
                             const at::TensorOptions& options) {
  TORCH_CHECK(first_row >= 0 && rows >= 0 && width >= 0, "keyed_normal_rows: first_row, rows and width must be >= 0, got ",
              first_row, ", ", rows, ", ", width);
  at::Tensor out = at::empty({rows, width}, options.device(at::kCPU).requires_grad(false));
  // Each row has its own generator seeded from (key, row).
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out.select(0, i).normal_(0.0, 1.0, make_generator(row_seed(key, first_row + i)));
  });
  return out.to(options.device());
}

void keyed_normal_row_into(uint64_t key, int64_t row, at::Tensor& out, at::Generator& scratch) {
  TORCH_CHECK(row >= 0, "keyed_normal_row_into: row must be >= 0, got ", row);
  TORCH_CHECK(out.device().is_cpu() && out.is_contiguous() && scratch.device().is_cpu(),
              "keyed_normal_row_into: out must be contiguous on the CPU and scratch a CPU generator");
  {
    std::lock_guard<std::mutex> lock(scratch.mutex());
    scratch.set_current_seed(row_seed(key, row));  // the state of make_generator(seed)
  }
  out.normal_(0.0, 1.0, scratch);
}

}  // namespace spe
