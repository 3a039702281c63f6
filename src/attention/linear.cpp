#include "spe/attention/linear.h"

#include <ATen/ATen.h>

#include "spe/attention/masks.h"
#include "spe/attention/softmax.h"
#include "spe/ops/causal_linear_attention.h"

namespace spe {
namespace {

// Zeroes the features of padded keys so that they drop out of every sum.
at::Tensor mask_keys(const at::Tensor& phi_k, const at::Tensor& key_padding) {
  if (!key_padding.defined()) return phi_k;
  AttentionMask{key_padding, false}.check(phi_k.size(0), phi_k.size(1));
  return phi_k * key_padding.to(phi_k.scalar_type()).view({phi_k.size(0), phi_k.size(1), 1, 1});
}

void check_eps(const char* where, double eps) {
  TORCH_CHECK(eps > 0, where, ": eps must be positive, got ", eps);
}

}  // namespace

at::Tensor linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const at::Tensor& key_padding, double eps) {
  check_qkv("linear_attention", phi_q, phi_k, v);
  check_eps("linear_attention", eps);
  at::Tensor keys = mask_keys(phi_k, key_padding);
  at::Tensor kv = at::einsum("bnhm,bnhd->bhmd", {keys, v});        // (B, H, M, Dv)
  at::Tensor normalizer = keys.sum(1);                              // (B, H, M)
  at::Tensor numerator = at::einsum("bnhm,bhmd->bnhd", {phi_q, kv});  // (B, Nq, H, Dv)
  at::Tensor denominator = at::einsum("bnhm,bhm->bnh", {phi_q, normalizer});
  return numerator / denominator.clamp_min(eps).unsqueeze(-1);
}

at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                   const at::Tensor& v, const at::Tensor& key_padding, double eps) {
  check_qkv("causal_linear_attention", phi_q, phi_k, v);
  check_eps("causal_linear_attention", eps);
  TORCH_CHECK(phi_q.size(1) == phi_k.size(1), "causal_linear_attention: queries (", phi_q.size(1),
              ") and keys (", phi_k.size(1), ") must have the same length");
  at::Tensor keys = mask_keys(phi_k, key_padding);
  const bool fused = phi_q.device().is_cpu() &&
                     (phi_q.scalar_type() == at::kFloat || phi_q.scalar_type() == at::kDouble);
  return fused ? ops::causal_linear_attention(phi_q, keys, v, eps) : causal_linear_attention_quadratic(phi_q, keys, v, eps);
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
                                                 int64_t value_dim, const at::TensorOptions& options) {
  TORCH_CHECK(batch > 0 && heads > 0 && features > 0 && value_dim > 0,
              "LinearAttentionState: sizes must be positive, got B = ", batch, ", H = ", heads,
              ", M = ", features, ", Dv = ", value_dim);
  return {at::zeros({batch, heads, features, value_dim}, options),
          at::zeros({batch, heads, features}, options), 0};
}

at::Tensor causal_linear_attention_step(const at::Tensor& phi_q_t, const at::Tensor& phi_k_t,
                                        const at::Tensor& v_t, LinearAttentionState& state,
                                        double eps) {
  check_eps("causal_linear_attention_step", eps);
  TORCH_CHECK(state.kv.defined() && state.kv.dim() == 4,
              "causal_linear_attention_step: state must be made by LinearAttentionState::zeros");
  const auto b = state.kv.size(0), h = state.kv.size(1), m = state.kv.size(2), dv = state.kv.size(3);
  TORCH_CHECK(phi_q_t.sizes() == at::IntArrayRef({b, h, m}) && phi_k_t.sizes() == phi_q_t.sizes(),
              "causal_linear_attention_step: phi_q_t and phi_k_t must be (B, H, M) = (", b, ", ", h,
              ", ", m, "), got ", phi_q_t.sizes(), " and ", phi_k_t.sizes());
  TORCH_CHECK(v_t.sizes() == at::IntArrayRef({b, h, dv}),
              "causal_linear_attention_step: v_t must be (B, H, Dv) = (", b, ", ", h, ", ", dv,
              "), got ", v_t.sizes());
  TORCH_CHECK(phi_q_t.scalar_type() == state.kv.scalar_type() &&
                  phi_k_t.scalar_type() == state.kv.scalar_type() &&
                  v_t.scalar_type() == state.kv.scalar_type(),
              "causal_linear_attention_step: inputs must have the state's dtype ",
              state.kv.scalar_type());
  state.kv = state.kv + phi_k_t.unsqueeze(-1) * v_t.unsqueeze(-2);
  state.normalizer = state.normalizer + phi_k_t;
  state.position += 1;
  at::Tensor numerator = at::matmul(phi_q_t.unsqueeze(-2), state.kv).squeeze(-2);  // (B, H, Dv)
  at::Tensor denominator = (phi_q_t * state.normalizer).sum(-1, true);            // (B, H, 1)
  return numerator / denominator.clamp_min(eps);
}

}  // namespace spe
