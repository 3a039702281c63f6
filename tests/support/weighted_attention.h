#pragma once
// Linear attention with a weight on each pair's distance (decay, toeplitz), the definition one
// pair at a time, and the random feature-mapped inputs its tests share.
#include <ATen/ATen.h>

#include <functional>

namespace spe::testing {

// w_h(lag) for the pair (m, n), lag = m - n.
using LagWeight = std::function<double(int64_t h, int64_t lag)>;

// out_m = sum_n w_h(m - n) (phi_q_m . phi_k_n) v_n / sum_n w_h(m - n) (phi_q_m . phi_k_n) over the
// allowed n (n <= m when causal, real keys when padding is defined); a query with none gets zeros.
inline at::Tensor weighted_linear_loops(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                        const LagWeight& weight, const at::Tensor& padding, bool causal) {
  const int64_t B = phi_q.size(0), N = phi_q.size(1), H = phi_q.size(2);
  at::Tensor out = at::zeros({B, N, H, v.size(3)}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < N; ++m) {
        at::Tensor numerator = at::zeros({v.size(3)}, at::kDouble);
        double denominator = 0;
        for (int64_t n = 0; n < N; ++n) {
          if ((causal && n > m) || (padding.defined() && !padding[b][n].item<bool>())) continue;
          const double w = weight(h, m - n) * (phi_q[b][m][h] * phi_k[b][n][h]).sum().item<double>();
          numerator += w * v[b][n][h];
          denominator += w;
        }
        if (denominator > 0) out[b][m][h] = numerator / denominator;
      }
  return out;
}

struct FeatureInputs {
  at::Tensor phi_q, phi_k, v, padding;  // (B, N, H, M) positive, (B, N, H, M), (B, N, H, Dv), (B, N)
};

// Float64 inputs; with B >= 2, batch 1's first key and key N - 2 are padding (so its causal query 0
// sees nothing).
inline FeatureInputs random_feature_inputs(int64_t B, int64_t N, int64_t H, int64_t M, int64_t Dv, uint64_t seed) {
  at::manual_seed(seed);
  FeatureInputs in{at::rand({B, N, H, M}, at::kDouble) + 0.1, at::rand({B, N, H, M}, at::kDouble) + 0.1,
                   at::randn({B, N, H, Dv}, at::kDouble), at::ones({B, N}, at::kBool)};
  if (B < 2) return in;
  in.padding[1][0] = false;
  in.padding[1][N - 2] = false;
  return in;
}

}  // namespace spe::testing
