#pragma once
// Linear attention by its definition, one pair (m, n) at a time, with any weight per pair (the
// positioned numerator) or on each pair's distance (decay, toeplitz), and the random
// feature-mapped inputs its tests share.
#include <ATen/ATen.h>

#include <functional>

namespace spe::testing {

// The weight of the pair (query m, key n) of batch b, head h.
using PairWeight = std::function<double(int64_t b, int64_t h, int64_t m, int64_t n)>;

// out_m = sum_n numerator(m, n) v_n / sum_n denominator(m, n) over the allowed n (n <= m when
// causal, real keys when padding is defined), one pair at a time; a query with none (or a zero
// denominator) gets zeros. v: (B, N, H, Dv) -> (B, N, H, Dv).
inline at::Tensor pairwise_linear_loops(const at::Tensor& v, const at::Tensor& padding, bool causal,
                                        const PairWeight& numerator_weight, const PairWeight& denominator_weight) {
  const int64_t B = v.size(0), N = v.size(1), H = v.size(2);
  at::Tensor out = at::zeros({B, N, H, v.size(3)}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < N; ++m) {
        at::Tensor numerator = at::zeros({v.size(3)}, at::kDouble);
        double denominator = 0;
        for (int64_t n = 0; n < N; ++n) {
          if ((causal && n > m) || (padding.defined() && !padding[b][n].item<bool>())) continue;
          numerator += numerator_weight(b, h, m, n) * v[b][n][h];
          denominator += denominator_weight(b, h, m, n);
        }
        if (denominator > 0) out[b][m][h] = numerator / denominator;
      }
  return out;
}

// The dot product of row (b, m, h) of a with row (b, n, h) of b_: a[b][m][h] . b_[b][n][h].
inline double pair_dot(const at::Tensor& a, const at::Tensor& b_, int64_t b, int64_t h, int64_t m, int64_t n) {
  return (a[b][m][h] * b_[b][n][h]).sum().item<double>();
}

// w_h(lag) for the pair (m, n), lag = m - n.
using LagWeight = std::function<double(int64_t h, int64_t lag)>;

// out_m = sum_n w_h(m - n) (phi_q_m . phi_k_n) v_n / sum_n w_h(m - n) (phi_q_m . phi_k_n) over the
// allowed n (n <= m when causal, real keys when padding is defined); a query with none gets zeros.
inline at::Tensor weighted_linear_loops(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                        const LagWeight& weight, const at::Tensor& padding, bool causal) {
  const PairWeight pair = [&](int64_t b, int64_t h, int64_t m, int64_t n) {
    return weight(h, m - n) * pair_dot(phi_q, phi_k, b, h, m, n);
  };
  return pairwise_linear_loops(v, padding, causal, pair, pair);
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
