#include "nn/dropout.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>
#include <mutex>

namespace spe::nn {
namespace {

constexpr double kLevels = 65536.0;  // 16 bits per entry

uint32_t drop_below(double p) { return static_cast<uint32_t>(std::llround(p * kLevels)); }

// mask[i] = scale where the entry's 16 bits are >= threshold, else 0; n entries, four per word.
template <typename T>
void fill_mask(T* mask, int64_t n, uint32_t threshold, T scale) {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  auto* engine = at::check_generator<at::CPUGeneratorImpl>(generator);
  std::lock_guard<std::mutex> lock(generator.mutex());
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint64_t bits = engine->random64();
    for (int lane = 0; lane < 4; ++lane)
      mask[i + lane] = ((bits >> (16 * lane)) & 0xFFFF) >= threshold ? scale : T(0);
  }
  if (i < n) {
    const uint64_t bits = engine->random64();
    for (int lane = 0; i < n; ++i, ++lane) mask[i] = ((bits >> (16 * lane)) & 0xFFFF) >= threshold ? scale : T(0);
  }
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
