#include "spe/encoding/spe_code.h"

#include <ATen/ATen.h>

#include <vector>

namespace spe {

void check_code(const SPECode& code) {
  TORCH_CHECK(code.qbar.defined() && code.kbar.defined(), "SPE code: qbar and kbar must be defined");
  TORCH_CHECK(code.qbar.dim() == 4, "SPE code: qbar must be (N, H, D, R), got shape ",
              code.qbar.sizes());
  TORCH_CHECK(code.qbar.sizes() == code.kbar.sizes(), "SPE code: qbar ", code.qbar.sizes(),
              " and kbar ", code.kbar.sizes(), " must have the same shape");
  TORCH_CHECK(code.qbar.scalar_type() == code.kbar.scalar_type(), "SPE code: qbar is ",
              code.qbar.scalar_type(), " but kbar is ", code.kbar.scalar_type());
  TORCH_CHECK(code.qbar.device() == code.kbar.device(), "SPE code: qbar is on ",
              code.qbar.device(), " but kbar is on ", code.kbar.device());
}

at::Tensor empirical_kernel(const SPECode& code) {
  check_code(code);
  const int64_t n = code.length();
  std::vector<at::Tensor> per_lag;
  per_lag.reserve(2 * n - 1);
  for (int64_t lag = -(n - 1); lag <= n - 1; ++lag) {
    // pairs (m, m - lag) with both inside [0, n)
    const int64_t first_m = std::max<int64_t>(0, lag);
    const int64_t count = n - std::abs(lag);
    at::Tensor q = code.qbar.narrow(0, first_m, count);
    at::Tensor k = code.kbar.narrow(0, first_m - lag, count);
    per_lag.push_back((q * k).sum(at::IntArrayRef{0, 3}) / static_cast<double>(count));
  }
  return at::stack(per_lag, -1);  // (H, D, 2N - 1)
}

}  // namespace spe
