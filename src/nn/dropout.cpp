#include "nn/dropout.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

namespace spe::nn {
namespace {

constexpr double kLevels = 65536.0;  // 16 bits per entry

uint32_t drop_below(double p) { return static_cast<uint32_t>(std::llround(p * kLevels)); }

// mask[i] = scale where entry i's 16 bits are >= threshold, else 0, for n entries: the words
// drawn first into 16-bit lanes (four entries each; entry i is bits 16 (i mod 4) .. 16 (i mod 4)
// + 15 of word i / 4 on a little-endian CPU), then compared in one loop the compiler vectorises.
template <typename T>
void fill_mask(T* mask, int64_t n, uint32_t threshold, T scale) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "fill_mask: each word's lanes in memory order");
  thread_local std::vector<uint16_t> entries;
  entries.resize(static_cast<size_t>((n + 3) / 4 * 4));
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    auto* engine = at::check_generator<at::CPUGeneratorImpl>(generator);
    std::lock_guard<std::mutex> lock(generator.mutex());
    for (size_t i = 0; i < entries.size(); i += 4) {
      const uint64_t word = engine->random64();
      std::memcpy(entries.data() + i, &word, sizeof word);
    }
  }
  for (int64_t i = 0; i < n; ++i) mask[i] = entries[i] >= threshold ? scale : T(0);
}

}  // namespace

double dropout_rate(double p) { return drop_below(p) / kLevels; }

at::Tensor apply_dropout(const at::Tensor& x, double p, bool training) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "apply_dropout: p must be in [0, 1), got ", p);
  if (!training || p == 0.0) return x;
  const bool mine = x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble);
  // a p so close to 1 that it rounds to 2^16 levels would drop everything: at::dropout's own rule
  if (!mine || drop_below(p) >= static_cast<uint32_t>(kLevels)) return at::dropout(x, p, training);
  at::Tensor mask = at::empty(x.sizes(), x.options().requires_grad(false));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spe::nn::dropout", [&] {
    fill_mask<scalar_t>(mask.data_ptr<scalar_t>(), mask.numel(), drop_below(p),
                        static_cast<scalar_t>(1.0 / (1.0 - dropout_rate(p))));
  });
  return x * mask;
}

}  // namespace spe::nn
