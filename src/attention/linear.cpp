#include "spe/attention/linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "ops/input_checks.h"
#include "spe/attention/masks.h"
#include "spe/attention/softmax.h"
#include "spe/ops/causal_linear_attention.h"
#include "spe/ops/separable_linear_attention.h"

namespace spe {
namespace {

// Zeroes the features of padded keys so that they drop out of every sum.
at::Tensor mask_keys(const at::Tensor& phi_k, const at::Tensor& key_padding) {
  if (!key_padding.defined()) return phi_k;
  AttentionMask{key_padding, false}.check(phi_k.size(0), phi_k.size(1));
  return phi_k * key_padding.to(phi_k.scalar_type()).view({phi_k.size(0), phi_k.size(1), 1, 1});
}

// (B, N, H, F) -> (B, H, chunks, C, F), zero rows after the end (they add nothing to any sum).
at::Tensor chunk_blocks(const at::Tensor& x, int64_t chunk) {
  const int64_t n = x.size(1), chunks = (n + chunk - 1) / chunk, padded = chunks * chunk;
  at::Tensor t = padded == n ? x : at::constant_pad_nd(x, {0, 0, 0, 0, 0, padded - n});
  return t.unflatten(1, {chunks, chunk}).permute({0, 3, 1, 2, 4});
}

void check_eps(const char* where, double eps) {
  TORCH_CHECK(eps > 0, where, ": eps must be positive, got ", eps);
}

// The checks of the forms where queries and keys are the same positions (decay, toeplitz).
void check_self_attention(const char* where, const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                          double eps) {
  check_qkv(where, phi_q, phi_k, v);
  check_eps(where, eps);
  TORCH_CHECK(phi_q.size(1) == phi_k.size(1), where, ": queries (", phi_q.size(1), ") and keys (", phi_k.size(1),
              ") must share their positions");
}

// v: (B, N, H, Dv) -> (B, N, H, Dv + 1): the normaliser rides along as a last value feature of ones.
at::Tensor with_ones_column(const at::Tensor& v) { return at::cat({v, at::ones_like(v.narrow(3, 0, 1))}, 3); }

// sums: (B, N, H, Dv + 1) of with_ones_column's values -> numerator / max(normaliser, eps).
at::Tensor divide_by_last(const at::Tensor& sums, double eps) {
  const int64_t dv = sums.size(3) - 1;
  return sums.narrow(3, 0, dv) / sums.narrow(3, dv, 1).clamp_min(eps);
}

// The positioned features must pair with the plain ones: same B, N, H, dtype and device, and
// the same P for queries and keys.
void check_numerator(const char* where, const at::Tensor& phi_q, const at::Tensor& phi_k,
                     const PositionedFeatures& numerator) {
  const at::Tensor &psi_q = numerator.query, &psi_k = numerator.key;
  TORCH_CHECK(psi_q.defined() && psi_k.defined(), where, ": the positioned features are undefined");
  TORCH_CHECK(psi_q.dim() == phi_q.dim() && psi_k.dim() == phi_k.dim(), where, ": positioned features ",
              psi_q.sizes(), ", ", psi_k.sizes(), " must have the rank of phi_q ", phi_q.sizes());
  for (int64_t i = 0; i + 1 < phi_q.dim(); ++i)
    TORCH_CHECK(psi_q.size(i) == phi_q.size(i) && psi_k.size(i) == phi_k.size(i), where,
                ": positioned features ", psi_q.sizes(), " and ", psi_k.sizes(), " must agree with phi_q ",
                phi_q.sizes(), " and phi_k ", phi_k.sizes(), " on every dimension but the last");
  TORCH_CHECK(psi_q.size(-1) == psi_k.size(-1), where, ": positioned query features have P = ", psi_q.size(-1),
              ", key features P = ", psi_k.size(-1));
  TORCH_CHECK(psi_q.scalar_type() == phi_q.scalar_type() && psi_k.scalar_type() == phi_q.scalar_type() &&
                  psi_q.device() == phi_q.device() && psi_k.device() == phi_q.device(),
              where, ": positioned features must have the dtype and device of phi_q (", phi_q.scalar_type(), ", ",
              phi_q.device(), ")");
}

// numerator (B, Nq, H, Dv) / max(phi_q_m^T sum_n phi_k_n, eps), keys already masked; the sum over
// n <= m when causal.
at::Tensor divide_by_normaliser(const at::Tensor& numerator, const at::Tensor& phi_q, const at::Tensor& keys,
                                double eps, bool causal = false) {
  const at::Tensor denominator = causal ? (phi_q * keys.cumsum(1)).sum(-1)                        // (B, N, H)
                                        : at::einsum("bnhm,bhm->bnh", {phi_q, keys.sum(1)});  // (B, Nq, H)
  return numerator / denominator.clamp_min(eps).unsqueeze(-1);
}

// Non-causal: out_m = psi_q_m^T (sum_n psi_k_n v_n^T) / max(phi_q_m^T sum_n phi_k_n, eps), keys
// already masked; psi = phi for plain linear attention.
at::Tensor normalised_sums(const at::Tensor& psi_q, const at::Tensor& psi_keys, const at::Tensor& phi_q,
                           const at::Tensor& keys, const at::Tensor& v, double eps) {
  at::Tensor kv = at::einsum("bnhp,bnhd->bhpd", {psi_keys, v});             // (B, H, P, Dv)
  return divide_by_normaliser(at::einsum("bnhp,bhpd->bnhd", {psi_q, kv}), phi_q, keys, eps);
}

}  // namespace

at::Tensor linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const at::Tensor& key_padding, double eps) {
  check_qkv("linear_attention", phi_q, phi_k, v);
  check_eps("linear_attention", eps);
  const at::Tensor keys = mask_keys(phi_k, key_padding);
  return normalised_sums(phi_q, keys, phi_q, keys, v, eps);
}

at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                   const at::Tensor& v, const at::Tensor& key_padding, double eps) {
  check_qkv("causal_linear_attention", phi_q, phi_k, v);
  check_eps("causal_linear_attention", eps);
  TORCH_CHECK(phi_q.size(1) == phi_k.size(1), "causal_linear_attention: queries (", phi_q.size(1),
              ") and keys (", phi_k.size(1), ") must have the same length");
  at::Tensor keys = mask_keys(phi_k, key_padding);
  return ops::fused_kernel_takes(phi_q) ? ops::causal_linear_attention(phi_q, keys, v, eps)
                                   : causal_linear_attention_quadratic(phi_q, keys, v, eps);
}

at::Tensor linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const PositionedFeatures& numerator, const at::Tensor& key_padding, double eps) {
  check_qkv("linear_attention", phi_q, phi_k, v);
  check_eps("linear_attention", eps);
  check_numerator("linear_attention", phi_q, phi_k, numerator);
  return normalised_sums(numerator.query, mask_keys(numerator.key, key_padding), phi_q, mask_keys(phi_k, key_padding), v,
                         eps);
}

at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                   const PositionedFeatures& numerator, const at::Tensor& key_padding, double eps) {
  check_qkv("causal_linear_attention", phi_q, phi_k, v);
  check_eps("causal_linear_attention", eps);
  check_numerator("causal_linear_attention", phi_q, phi_k, numerator);
  TORCH_CHECK(phi_q.size(1) == phi_k.size(1), "causal_linear_attention: queries (", phi_q.size(1),
              ") and keys (", phi_k.size(1), ") must have the same length");
  at::Tensor keys = mask_keys(phi_k, key_padding), positioned_keys = mask_keys(numerator.key, key_padding);
  return divide_by_normaliser(causal_product(numerator.query, positioned_keys, v), phi_q, keys, eps, /*causal=*/true);
}

// The coefficients must pair with phi_q, phi_k: (N, H, M, J) at their N, H, M, with one J, dtype and device.
void check_separable(const char* where, const at::Tensor& phi_q, const at::Tensor& phi_k,
                     const SeparableFeatures& separable) {
  const at::Tensor &c_q = separable.query, &c_k = separable.key;
  TORCH_CHECK(c_q.defined() && c_k.defined(), where, ": the separable features' coefficients are undefined");
  auto fits = [](const at::Tensor& c, const at::Tensor& phi) {
    return c.dim() == 4 && c.size(0) == phi.size(1) && c.size(1) == phi.size(2) && c.size(2) == phi.size(3);
  };
  TORCH_CHECK(fits(c_q, phi_q) && fits(c_k, phi_k) && c_q.size(3) == c_k.size(3), where,
              ": coefficients ", c_q.sizes(), " and ", c_k.sizes(), " must be (N, H, M, J) with phi_q's ",
              phi_q.sizes(), " and phi_k's ", phi_k.sizes(), " N, H and M, and one J");
  TORCH_CHECK(c_q.scalar_type() == phi_q.scalar_type() && c_k.scalar_type() == phi_q.scalar_type() &&
                  c_q.device() == phi_q.device() && c_k.device() == phi_q.device(),
              where, ": coefficients must have the dtype and device of phi_q (", phi_q.scalar_type(), ", ",
              phi_q.device(), ")");
}

PositionedFeatures positioned_features(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                       const SeparableFeatures& separable) {
  check_separable("positioned_features", phi_q, phi_k, separable);
  // phi (B, N, H, M) -> (B, N, H, M, 1) times (N, H, M, J) -> (B, N, H, M J)
  return {(phi_q.unsqueeze(-1) * separable.query).flatten(3), (phi_k.unsqueeze(-1) * separable.key).flatten(3)};
}

at::Tensor separable_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                      const SeparableFeatures& separable, const at::Tensor& key_padding, double eps) {
  check_qkv("separable_linear_attention", phi_q, phi_k, v);
  check_eps("separable_linear_attention", eps);
  check_separable("separable_linear_attention", phi_q, phi_k, separable);
  if (!ops::fused_kernel_takes(phi_q))
    return linear_attention(phi_q, phi_k, v, positioned_features(phi_q, phi_k, separable), key_padding, eps);
  const at::Tensor keys = mask_keys(phi_k, key_padding);  // psi_k of a padded key is zero with its phi_k
  return divide_by_normaliser(ops::separable_linear_numerator(phi_q, keys, v, separable.query, separable.key), phi_q,
                              keys, eps);
}

at::Tensor causal_separable_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                             const SeparableFeatures& separable, const at::Tensor& key_padding,
                                             double eps) {
  const char* where = "causal_separable_linear_attention";
  check_qkv(where, phi_q, phi_k, v);
  check_eps(where, eps);
  check_separable(where, phi_q, phi_k, separable);
  TORCH_CHECK(phi_q.size(1) == phi_k.size(1), where, ": queries (", phi_q.size(1), ") and keys (", phi_k.size(1),
              ") must have the same length");
  if (!ops::fused_kernel_takes(phi_q))
    return causal_linear_attention(phi_q, phi_k, v, positioned_features(phi_q, phi_k, separable), key_padding, eps);
  const at::Tensor keys = mask_keys(phi_k, key_padding);
  return divide_by_normaliser(
      ops::separable_linear_numerator(phi_q, keys, v, separable.query, separable.key, /*causal=*/true), phi_q, keys,
      eps, /*causal=*/true);
}

at::Tensor causal_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v, int64_t chunk) {
  check_qkv("causal_product", a, b, v);
  TORCH_CHECK(a.size(1) == b.size(1), "causal_product: a (", a.size(1), ") and b (", b.size(1),
              ") must have the same length");
  TORCH_CHECK(chunk > 0, "causal_product: chunk must be positive, got ", chunk);
  const int64_t n = a.size(1);
  const at::Tensor ab = chunk_blocks(a, chunk), bb = chunk_blocks(b, chunk), vb = chunk_blocks(v, chunk);
  at::Tensor inside = at::matmul(at::matmul(ab, bb.transpose(-1, -2)).tril(), vb);   // (B, H, chunks, C, Dv)
  at::Tensor states = at::matmul(bb.transpose(-1, -2), vb);                          // (B, H, chunks, P, Dv)
  at::Tensor before = states.cumsum(2) - states;                                      // chunks before each one
  at::Tensor out = inside + at::matmul(ab, before);
  return out.permute({0, 2, 3, 1, 4}).flatten(1, 2).narrow(1, 0, n);                 // (B, N, H, Dv)
}

at::Tensor causal_linear_attention_quadratic(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                             double eps) {
  // (B, H, N, N) similarities keeping n <= m only
  at::Tensor similarity = at::einsum("bmhk,bnhk->bhmn", {phi_q, phi_k}).tril();
  at::Tensor numerator = at::einsum("bhmn,bnhd->bmhd", {similarity, v});
  at::Tensor denominator = similarity.sum(-1).transpose(1, 2);  // (B, N, H)
  return numerator / denominator.clamp_min(eps).unsqueeze(-1);
}

LinearAttentionState LinearAttentionState::zeros(int64_t batch, int64_t heads, int64_t features,
                                                 int64_t value_dim, const at::TensorOptions& options,
                                                 int64_t numerator_features) {
  TORCH_CHECK(batch > 0 && heads > 0 && features > 0 && value_dim > 0 && numerator_features >= 0,
              "LinearAttentionState: sizes must be positive, got B = ", batch, ", H = ", heads,
              ", M = ", features, ", Dv = ", value_dim, ", P = ", numerator_features);
  const int64_t p = numerator_features > 0 ? numerator_features : features;
  return {at::zeros({batch, heads, p, value_dim}, options), at::zeros({batch, heads, features}, options), 0};
}

namespace {

// One step with numerator features psi (phi itself when no positioned features).
at::Tensor absorb_and_read(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t, const at::Tensor& v_t,
                           const at::Tensor& psi_q_t, const at::Tensor& psi_k_t, LinearAttentionState& state,
                           double eps) {
  const char* where = "causal_linear_attention_step";
  check_eps(where, eps);
  TORCH_CHECK(state.kv.defined() && state.kv.dim() == 4 && state.normalizer.dim() == 3,
              where, ": state must be made by LinearAttentionState::zeros");
  const auto b = state.kv.size(0), h = state.kv.size(1), p = state.kv.size(2), dv = state.kv.size(3);
  const auto m = state.normalizer.size(2);
  TORCH_CHECK(phi_q_t.sizes() == at::IntArrayRef({b, h, m}) && phi_k_t.sizes() == phi_q_t.sizes(), where,
              ": phi_q_t and phi_k_t must be (B, H, M) = (", b, ", ", h, ", ", m, "), got ", phi_q_t.sizes(),
              " and ", phi_k_t.sizes());
  TORCH_CHECK(psi_q_t.sizes() == at::IntArrayRef({b, h, p}) && psi_k_t.sizes() == psi_q_t.sizes(), where,
              ": the numerator's features must be (B, H, P) = (", b, ", ", h, ", ", p, ") as the state's, got ",
              psi_q_t.sizes(), " and ", psi_k_t.sizes());
  TORCH_CHECK(v_t.sizes() == at::IntArrayRef({b, h, dv}), where, ": v_t must be (B, H, Dv) = (", b, ", ", h, ", ",
              dv, "), got ", v_t.sizes());
  for (const at::Tensor* t : {&phi_q_t, &phi_k_t, &psi_q_t, &psi_k_t, &v_t})
    TORCH_CHECK(t->scalar_type() == state.kv.scalar_type(), where, ": inputs must have the state's dtype ",
                state.kv.scalar_type(), ", got ", t->scalar_type());
  state.kv = state.kv + psi_k_t.unsqueeze(-1) * v_t.unsqueeze(-2);
  state.normalizer = state.normalizer + phi_k_t;
  state.position += 1;
  at::Tensor numerator = at::matmul(psi_q_t.unsqueeze(-2), state.kv).squeeze(-2);  // (B, H, Dv)
  at::Tensor denominator = (phi_q_t * state.normalizer).sum(-1, true);            // (B, H, 1)
  return numerator / denominator.clamp_min(eps);
}

}  // namespace

at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, LinearAttentionState& state,
                                        double eps) {
  return absorb_and_read(phi_q_t, phi_k_t, v_t, phi_q_t, phi_k_t, state, eps);
}

at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, const PositionedFeatures& numerator_t,
                                        LinearAttentionState& state, double eps) {
  TORCH_CHECK(numerator_t.query.defined() && numerator_t.key.defined(),
              "causal_linear_attention_step: the positioned features are undefined");
  return absorb_and_read(phi_q_t, phi_k_t, v_t, numerator_t.query, numerator_t.key, state, eps);
}

namespace {

void check_log_decay(const char* where, const at::Tensor& log_decay, const at::Tensor& x) {
  TORCH_CHECK(log_decay.defined() && log_decay.dim() == 1 && log_decay.size(0) == x.size(2), where,
              ": log_decay must be (H,) with H = ", x.size(2), ", got ",
              log_decay.defined() ? log_decay.sizes() : at::IntArrayRef{});
  TORCH_CHECK(log_decay.scalar_type() == x.scalar_type() && log_decay.device() == x.device(), where,
              ": log_decay must have the inputs' dtype and device (", x.scalar_type(), ", ", x.device(), "), got ",
              log_decay.scalar_type(), ", ", log_decay.device());
}

// g^e for e = exponents (any shape, >= 0) in every head: (H, *exponents.shape).
at::Tensor powers(const at::Tensor& log_decay, const at::Tensor& exponents) {
  std::vector<int64_t> shape{log_decay.size(0)};
  shape.insert(shape.end(), exponents.dim(), 1);
  return at::exp(log_decay.view(shape) * exponents.unsqueeze(0));
}

}  // namespace

at::Tensor decayed_causal_product(const at::Tensor& a, const at::Tensor& b, const at::Tensor& v,
                                  const at::Tensor& log_decay, int64_t chunk) {
  const char* where = "decayed_causal_product";
  check_qkv(where, a, b, v);
  TORCH_CHECK(a.size(1) == b.size(1), where, ": a (", a.size(1), ") and b (", b.size(1), ") must have the same length");
  TORCH_CHECK(chunk > 0, where, ": chunk must be positive, got ", chunk);
  check_log_decay(where, log_decay, a);
  const int64_t n = a.size(1);
  const at::Tensor ab = chunk_blocks(a, chunk), bb = chunk_blocks(b, chunk), vb = chunk_blocks(v, chunk);
  const at::Tensor i = at::arange(chunk, a.options());                       // position inside a chunk
  const at::Tensor lag = i.unsqueeze(1) - i.unsqueeze(0);                    // (C, C): i - j
  const at::Tensor inside_weights = powers(log_decay, lag.clamp_min(0)) * (lag >= 0);  // (H, C, C)
  at::Tensor inside = at::matmul(at::matmul(ab, bb.transpose(-1, -2)) * inside_weights.unsqueeze(1), vb);
  // Each chunk's sum_j g^(C - 1 - j) b_j v_j^T (at its last position), then the state before each
  // chunk by the scan state_c = g^C state_(c-1) + sum_(c-1).
  const at::Tensor to_end = powers(log_decay, (chunk - 1) - i).unsqueeze(1).unsqueeze(-1);  // (H, 1, C, 1)
  const at::Tensor sums = at::matmul((bb * to_end).transpose(-1, -2), vb);                 // (B, H, chunks, P, Dv)
  const at::Tensor per_chunk = at::exp(log_decay * static_cast<double>(chunk)).view({1, -1, 1, 1});
  std::vector<at::Tensor> states{at::zeros_like(sums.select(2, 0))};
  for (int64_t c = 1; c < ab.size(2); ++c) states.push_back(states.back() * per_chunk + sums.select(2, c - 1));
  // A query at i reads the state g^(i + 1) later than the chunk's previous position.
  const at::Tensor from_start = powers(log_decay, i + 1).unsqueeze(1).unsqueeze(-1);  // (H, 1, C, 1)
  at::Tensor out = inside + at::matmul(ab * from_start, at::stack(states, 2));
  return out.permute({0, 2, 3, 1, 4}).flatten(1, 2).narrow(1, 0, n);  // (B, N, H, Dv)
}

at::Tensor decayed_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                    const at::Tensor& log_decay, bool causal, const at::Tensor& key_padding,
                                    double eps) {
  check_self_attention("decayed_linear_attention", phi_q, phi_k, v, eps);
  check_log_decay("decayed_linear_attention", log_decay, phi_q);
  const at::Tensor keys = mask_keys(phi_k, key_padding);
  // On CPU the fused kernel with the decay (ops/causal_linear_attention.h), else the ATen scan.
  const bool fused = ops::fused_kernel_takes(phi_q);
  if (causal && fused) return ops::decayed_causal_linear_attention(phi_q, keys, v, log_decay, eps);
  // The sums over n <= m: numerators (B, N, H, Dv) and normalisers (B, N, H).
  auto causal_sums = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& values) {
    if (fused) return ops::decayed_causal_linear_sums(q, k, values, log_decay);
    const int64_t dv = values.size(3);
    const at::Tensor sums = decayed_causal_product(q, k, with_ones_column(values), log_decay);
    return std::make_tuple(sums.narrow(3, 0, dv), sums.select(3, dv));
  };
  auto [num, den] = causal_sums(phi_q, keys, v);
  if (!causal) {  // the keys after each query: the same sums backwards, less the pair (m, m) both hold
    auto flip = [](const at::Tensor& t) { return t.flip({1}); };
    const auto [num_back, den_back] = causal_sums(flip(phi_q), flip(keys), flip(v));
    const at::Tensor itself = (phi_q * keys).sum(-1);  // (B, N, H)
    num = num + flip(num_back) - itself.unsqueeze(-1) * v;
    den = den + flip(den_back) - itself;
  }
  return num / den.clamp_min(eps).unsqueeze(-1);
}

at::Tensor decayed_causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                                const at::Tensor& v_t, const at::Tensor& log_decay,
                                                LinearAttentionState& state, double eps) {
  const char* where = "decayed_causal_linear_attention_step";
  TORCH_CHECK(state.kv.defined() && state.kv.dim() == 4 && state.normalizer.dim() == 3, where,
              ": state must be made by LinearAttentionState::zeros");
  TORCH_CHECK(log_decay.defined() && log_decay.dim() == 1 && log_decay.size(0) == state.kv.size(1), where,
              ": log_decay must be (H,) with H = ", state.kv.size(1));
  const at::Tensor g = at::exp(log_decay).to(state.kv.scalar_type());  // (H,)
  state.kv = state.kv * g.view({1, -1, 1, 1});
  state.normalizer = state.normalizer * g.view({1, -1, 1});
  return absorb_and_read(phi_q_t, phi_k_t, v_t, phi_q_t, phi_k_t, state, eps);
}

at::Tensor toeplitz_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                     const at::Tensor& lag_bias, bool causal, const at::Tensor& key_padding,
                                     double eps) {
  const char* where = "toeplitz_linear_attention";
  check_self_attention(where, phi_q, phi_k, v, eps);
  const int64_t n = phi_q.size(1), h = phi_q.size(2);
  TORCH_CHECK(lag_bias.defined() && lag_bias.dim() == 2 && lag_bias.size(0) == h && lag_bias.size(1) == 2 * n - 1,
              where, ": lag_bias must be (H, 2N - 1) = (", h, ", ", 2 * n - 1, "), got ",
              lag_bias.defined() ? lag_bias.sizes() : at::IntArrayRef{});
  TORCH_CHECK(lag_bias.scalar_type() == phi_q.scalar_type() && lag_bias.device() == phi_q.device(), where,
              ": lag_bias must have the inputs' dtype and device (", phi_q.scalar_type(), ", ", phi_q.device(), ")");
  // The weights of lags -(N - 1) .. N - 1, then the first column of the 2N circulant that holds
  // the Toeplitz matrix: lags 0 .. N - 1, a zero, lags -(N - 1) .. -1.
  at::Tensor weights = at::exp(lag_bias);  // (H, 2N - 1)
  at::Tensor before = weights.narrow(1, 0, n - 1), after = weights.narrow(1, n - 1, n);
  if (causal) before = at::zeros_like(before);
  const at::Tensor column = at::cat({after, at::zeros_like(after.narrow(1, 0, 1)), before}, 1);  // (H, 2N)
  // Each (feature, value feature) pair of the keys' outer products, along the positions.
  const at::Tensor pairs = at::einsum("bnhm,bnhd->bhmdn", {mask_keys(phi_k, key_padding), with_ones_column(v)});
  const at::Tensor spectrum = at::fft_rfft(column, 2 * n).view({1, h, 1, 1, n + 1});
  const at::Tensor sums = at::fft_irfft(at::fft_rfft(pairs, 2 * n) * spectrum, 2 * n).narrow(-1, 0, n);
  const at::Tensor read = at::einsum("bnhm,bhmdn->bnhd", {phi_q, sums});  // (B, N, H, Dv + 1)
  const at::Tensor out = divide_by_last(read, eps);
  if (!key_padding.defined()) return out;
  // A query that sees no key gets zeros, as in the other forms, not the FFT's rounding over eps.
  const at::Tensor real = key_padding.to(at::kLong);  // (B, N)
  const at::Tensor seen = causal ? real.cumsum(1) : real.sum(1, true).expand_as(real);
  return out * (seen > 0).to(out.scalar_type()).view({seen.size(0), n, 1, 1});
}

namespace {

// The weight e^(b_h(clamp(m - n, -clip, clip))) of every query of a block (rows, position s)
// against the keys of its window (columns, t; the window starts one block before the queries'):
// lag m - n = s - t + block; zero for n > m when causal: (H, block, window).
at::Tensor window_weights(const at::Tensor& bias, int64_t block, int64_t window, bool causal) {
  const int64_t clip = (bias.size(1) - 1) / 2;
  const auto longs = at::TensorOptions().dtype(at::kLong).device(bias.device());
  const at::Tensor lag = at::arange(block, longs).unsqueeze(1) - at::arange(window, longs).unsqueeze(0) + block;
  at::Tensor w = at::exp(bias).index_select(1, (lag.clamp(-clip, clip) + clip).flatten()).view({-1, block, window});
  return causal ? w * (lag >= 0).to(w.scalar_type()) : w;
}

// x: (B, N, H, F) -> each block's window of `blocks` blocks starting one block before it:
// (B, H, chunks, blocks x block, F), zeros outside 0 .. N - 1.
at::Tensor key_windows(const at::Tensor& x, int64_t block, int64_t blocks) {
  const int64_t n = x.size(1), chunks = (n + block - 1) / block;
  const int64_t after = chunks * block - n + (blocks - 2) * block;
  const at::Tensor padded = at::constant_pad_nd(x, {0, 0, 0, 0, block, after});  // (B, L, H, F)
  return padded.permute({0, 2, 3, 1}).unfold(3, blocks * block, block).permute({0, 1, 3, 4, 2});
}

// The clipped Toeplitz sums in blocks of `block` >= clip - 1 positions: the keys of the block
// before, the block itself (and the one after, not causal) with their own weights; every key
// farther away is at a lag beyond the clip and shares e^(b(clip)) (before) or e^(b(-clip))
// (after), so it is read from per-block prefix sums of k v^T. keys, values (with the ones
// column) already masked: (B, N, H, M), (B, N, H, Dv + 1) -> (B, N, H, Dv + 1).
at::Tensor windowed_toeplitz_sums(const at::Tensor& phi_q, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& bias, bool causal, int64_t block) {
  const int64_t n = phi_q.size(1), h = phi_q.size(2), blocks = causal ? 2 : 3;
  const at::Tensor qb = chunk_blocks(phi_q, block);                                   // (B, H, C, b, M)
  const at::Tensor kw = key_windows(keys, block, blocks), vw = key_windows(values, block, blocks);
  const at::Tensor w = window_weights(bias, block, blocks * block, causal).unsqueeze(1);  // (H, 1, b, window)
  at::Tensor sums = at::matmul(at::matmul(qb, kw.transpose(-1, -2)) * w, vw);        // (B, H, C, b, Dv + 1)
  // Prefix sums of k v^T through each block, then those of the blocks before each window.
  const at::Tensor through = at::matmul(chunk_blocks(keys, block).transpose(-1, -2), chunk_blocks(values, block))
                                 .cumsum(2);                                          // (B, H, C, M, Dv + 1)
  const int64_t chunks = through.size(2);
  const at::Tensor far_before = at::constant_pad_nd(through, {0, 0, 0, 0, 2, 0}).narrow(2, 0, chunks);
  const at::Tensor weight_before = at::exp(bias.select(1, bias.size(1) - 1)).view({1, h, 1, 1, 1});
  sums = sums + weight_before * at::matmul(qb, far_before);
  if (!causal) {  // the keys after the window: all of them less those through the block after
    const at::Tensor total = through.narrow(2, chunks - 1, 1);
    const at::Tensor through_next = at::cat({through.narrow(2, 1, chunks - 1), total}, 2);
    const at::Tensor weight_after = at::exp(bias.select(1, 0)).view({1, h, 1, 1, 1});
    sums = sums + weight_after * at::matmul(qb, total - through_next);
  }
  return sums.permute({0, 2, 3, 1, 4}).flatten(1, 2).narrow(1, 0, n);
}

// The clip of a clipped bias (H, 2 clip + 1), checked against x's heads (dimension heads_dim),
// dtype and device.
int64_t checked_clip(const char* where, const at::Tensor& bias, const at::Tensor& x, int64_t heads_dim) {
  const int64_t h = x.size(heads_dim);
  TORCH_CHECK(bias.defined() && bias.dim() == 2 && bias.size(0) == h && bias.size(1) % 2 == 1 && bias.size(1) >= 3,
              where, ": bias must be (H, 2 clip + 1) with H = ", h, " and clip >= 1, got ",
              bias.defined() ? bias.sizes() : at::IntArrayRef{});
  TORCH_CHECK(bias.scalar_type() == x.scalar_type() && bias.device() == x.device(), where,
              ": bias must have the inputs' dtype and device (", x.scalar_type(), ", ", x.device(), ")");
  return (bias.size(1) - 1) / 2;
}

// The FFT's cost grows with N log N per (feature, value feature) pair, the windows' with the clip
// per (feature + value feature): windows while their keys per query stay below the FFT's work.
bool windows_are_cheaper(int64_t n, int64_t clip, int64_t features, int64_t value_dim) {
  if (clip >= n) return false;
  const double fft = 4.0 * static_cast<double>(features * value_dim) * std::log2(2.0 * static_cast<double>(n));
  return 3.0 * static_cast<double>(clip) * static_cast<double>(features + value_dim) < fft;
}

}  // namespace

at::Tensor clipped_toeplitz_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                             const at::Tensor& bias, bool causal, const at::Tensor& key_padding,
                                             double eps) {
  const char* where = "clipped_toeplitz_linear_attention";
  check_self_attention(where, phi_q, phi_k, v, eps);
  const int64_t n = phi_q.size(1), clip = checked_clip(where, bias, phi_q, 2);
  if (!windows_are_cheaper(n, clip, phi_q.size(3), v.size(3) + 1)) {
    const auto longs = at::TensorOptions().dtype(at::kLong).device(bias.device());
    const at::Tensor lags = at::arange(-(n - 1), n, longs).clamp(-clip, clip) + clip;
    return toeplitz_linear_attention(phi_q, phi_k, v, bias.index_select(1, lags), causal, key_padding, eps);
  }
  const at::Tensor keys = mask_keys(phi_k, key_padding);
  const int64_t block = std::max<int64_t>(clip, 16);
  // A query that sees no key has zero sums, hence zeros, as in the other forms.
  return divide_by_last(windowed_toeplitz_sums(phi_q, keys, with_ones_column(v), bias, causal, block), eps);
}

at::Tensor clipped_toeplitz_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                                  const at::Tensor& v_t, const at::Tensor& bias, ToeplitzState& state,
                                                  double eps) {
  const char* where = "clipped_toeplitz_linear_attention_step";
  check_eps(where, eps);
  TORCH_CHECK(phi_q_t.dim() == 3 && phi_k_t.sizes() == phi_q_t.sizes() && v_t.dim() == 3 &&
                  v_t.size(0) == phi_q_t.size(0) && v_t.size(1) == phi_q_t.size(1),
              where, ": phi_q_t, phi_k_t must be (B, H, M) and v_t (B, H, Dv), got ", phi_q_t.sizes(), ", ",
              phi_k_t.sizes(), ", ", v_t.sizes());
  const int64_t h = phi_q_t.size(1), clip = checked_clip(where, bias, phi_q_t, 1);
  if (!state.far.kv.defined())
    state.far = LinearAttentionState::zeros(phi_k_t.size(0), h, phi_k_t.size(2), v_t.size(2), v_t.options());
  state.keys = state.keys.defined() ? at::cat({state.keys, phi_k_t.unsqueeze(2)}, 2) : phi_k_t.unsqueeze(2);
  state.values = state.values.defined() ? at::cat({state.values, v_t.unsqueeze(2)}, 2) : v_t.unsqueeze(2);
  if (state.keys.size(2) > clip) {  // the oldest key reached lag clip: into the far sums
    const at::Tensor k_old = state.keys.select(2, 0), v_old = state.values.select(2, 0);
    state.far.kv = state.far.kv + k_old.unsqueeze(-1) * v_old.unsqueeze(-2);
    state.far.normalizer = state.far.normalizer + k_old;
    state.keys = state.keys.narrow(2, 1, clip);
    state.values = state.values.narrow(2, 1, clip);
  }
  state.far.position += 1;
  const int64_t window = state.keys.size(2);
  // The window's lags, oldest first: window - 1 .. 0; their weights (H, W).
  const at::Tensor weights = at::exp(bias.narrow(1, clip, window).flip({1}));
  const at::Tensor scores = at::matmul(state.keys, phi_q_t.unsqueeze(-1)).squeeze(-1) * weights;  // (B, H, W)
  const at::Tensor far_weight = at::exp(bias.select(1, 2 * clip)).view({1, h, 1});
  const at::Tensor numerator = at::matmul(scores.unsqueeze(-2), state.values).squeeze(-2) +
                               far_weight * at::matmul(phi_q_t.unsqueeze(-2), state.far.kv).squeeze(-2);  // (B, H, Dv)
  const at::Tensor denominator =
      scores.sum(-1, true) + far_weight * (phi_q_t * state.far.normalizer).sum(-1, true);  // (B, H, 1)
  return numerator / denominator.clamp_min(eps);
}

}  // namespace spe
