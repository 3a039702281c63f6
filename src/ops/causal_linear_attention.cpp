#include "spe/ops/causal_linear_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/causal_linear_attention.h"
#include "ops/fresh_tensor.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The data of an optional tensor (undefined: nullptr, which the kernel reads as "none").
template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

kernels::cpu::CausalShape causal_shape_of(const at::Tensor& q, const at::Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

// Without log_decay (H,): plain causal linear attention (optional: an undefined tensor cannot be a
// Function's input). Returns {out} normalised, or with `raw` {num, den}: the sums themselves.
struct CausalLinearAttentionFunction : public torch::autograd::Function<CausalLinearAttentionFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                               const at::Tensor& v_in, const c10::optional<at::Tensor>& log_decay_in, double eps,
                               int64_t chunk, bool raw) {
    at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    at::Tensor log_decay = log_decay_in.has_value() ? log_decay_in->contiguous() : at::Tensor();
    at::Tensor out = fresh_like(v);
    at::Tensor den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_linear_attention_forward", [&] {
      kernels::cpu::causal_linear_attention_forward<scalar_t>(
          causal_shape_of(q, v), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          data_or_null<scalar_t>(log_decay), static_cast<scalar_t>(eps), chunk, out.data_ptr<scalar_t>(),
          den.data_ptr<scalar_t>(), /*normalize=*/!raw);
    });
    // the raw sums' backward needs neither out nor den
    ctx->save_for_backward(raw ? variable_list{q, k, v, log_decay} : variable_list{q, k, v, log_decay, out, den});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["raw"] = raw;
    if (raw) return {out, den};
    return {out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &log_decay = saved[3];
    const bool raw = ctx->saved_data["raw"].toBool();
    const at::Tensor out = raw ? at::Tensor() : saved[4], den = raw ? at::Tensor() : saved[5];
    // an output that reached no loss has an undefined gradient: zeros
    const at::Tensor grad_out = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(v);
    at::Tensor grad_den;
    if (raw) grad_den = grads[1].defined() ? grads[1].contiguous() : at::zeros({q.size(0), q.size(1), q.size(2)}, q.options());
    at::Tensor grad_q = fresh_like(q), grad_k = fresh_like(k), grad_v = fresh_like(v);
    // d loss / d log g of each (batch, head) pair, summed over the batch below: (B, H)
    at::Tensor pair_grads;
    if (log_decay.defined() && ctx->needs_input_grad(3)) pair_grads = at::empty({q.size(0), q.size(2)}, q.options());
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_linear_attention_backward", [&] {
      kernels::cpu::causal_linear_attention_backward<scalar_t>(
          causal_shape_of(q, v), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          data_or_null<scalar_t>(log_decay), data_or_null<scalar_t>(out), data_or_null<scalar_t>(den),
          grad_out.data_ptr<scalar_t>(), static_cast<scalar_t>(eps), chunk, grad_q.data_ptr<scalar_t>(),
          grad_k.data_ptr<scalar_t>(), grad_v.data_ptr<scalar_t>(), data_or_null<scalar_t>(pair_grads),
          data_or_null<scalar_t>(grad_den));
    });
    at::Tensor grad_log_decay = pair_grads.defined() ? pair_grads.sum(0) : at::Tensor();
    return {grad_q, grad_k, grad_v, grad_log_decay, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The checks of every op.
void check_causal_inputs(const char* where, const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                         int64_t chunk) {
  TORCH_CHECK(phi_q.dim() == 4 && phi_k.dim() == 4 && v.dim() == 4, where,
              ": inputs must be (B, N, H, M), (B, N, H, M), (B, N, H, Dv), got ", phi_q.sizes(), ", ",
              phi_k.sizes(), ", ", v.sizes());
  TORCH_CHECK(phi_q.sizes() == phi_k.sizes(), where, ": phi_q ", phi_q.sizes(), " and phi_k ", phi_k.sizes(),
              " must have the same shape");
  TORCH_CHECK(v.size(0) == phi_q.size(0) && v.size(1) == phi_q.size(1) && v.size(2) == phi_q.size(2), where,
              ": values ", v.sizes(), " must agree with phi_q ", phi_q.sizes(), " on B, N and H");
  TORCH_CHECK(phi_q.device().is_cpu() && phi_k.device().is_cpu() && v.device().is_cpu(), where,
              ": the fused kernel runs on CPU, got ", phi_q.device());
  TORCH_CHECK(phi_q.scalar_type() == at::kFloat || phi_q.scalar_type() == at::kDouble, where,
              ": float32 or float64 expected, got ", phi_q.scalar_type());
  TORCH_CHECK(phi_k.scalar_type() == phi_q.scalar_type() && v.scalar_type() == phi_q.scalar_type(), where,
              ": inputs must share a dtype, got ", phi_q.scalar_type(), ", ", phi_k.scalar_type(), ", ",
              v.scalar_type());
  TORCH_CHECK(chunk > 0 && chunk <= 4096, where, ": chunk must be in [1, 4096], got ", chunk);
}

void check_log_decay(const char* where, const at::Tensor& log_decay, const at::Tensor& phi_q) {
  TORCH_CHECK(log_decay.defined() && log_decay.dim() == 1 && log_decay.size(0) == phi_q.size(2), where,
              ": log_decay must be (H,) with H = ", phi_q.size(2), ", got ",
              log_decay.defined() ? log_decay.sizes() : at::IntArrayRef{});
  TORCH_CHECK(log_decay.scalar_type() == phi_q.scalar_type() && log_decay.device().is_cpu(), where,
              ": log_decay must be on CPU in the inputs' dtype ", phi_q.scalar_type(), ", got ",
              log_decay.scalar_type(), " on ", log_decay.device());
  TORCH_CHECK(!(log_decay > 0).any().item<bool>(), where, ": log_decay must be <= 0 (decays g <= 1), got ",
              log_decay.max().item<double>());
}

}  // namespace

at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                   double eps, int64_t chunk) {
  const char* where = "spe::ops::causal_linear_attention";
  check_causal_inputs(where, phi_q, phi_k, v, chunk);
  TORCH_CHECK(eps > 0, where, ": eps must be positive, got ", eps);
  if (phi_q.size(1) == 0) return at::empty_like(v);
  return CausalLinearAttentionFunction::apply(phi_q, phi_k, v, c10::nullopt, eps, chunk, false)[0];
}

at::Tensor decayed_causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                           const at::Tensor& log_decay, double eps, int64_t chunk) {
  const char* where = "spe::ops::decayed_causal_linear_attention";
  check_causal_inputs(where, phi_q, phi_k, v, chunk);
  TORCH_CHECK(eps > 0, where, ": eps must be positive, got ", eps);
  check_log_decay(where, log_decay, phi_q);
  if (phi_q.size(1) == 0) return at::empty_like(v);
  return CausalLinearAttentionFunction::apply(phi_q, phi_k, v, c10::optional<at::Tensor>(log_decay), eps, chunk,
                                              false)[0];
}

std::tuple<at::Tensor, at::Tensor> decayed_causal_linear_sums(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                                              const at::Tensor& v, const at::Tensor& log_decay,
                                                              int64_t chunk) {
  const char* where = "spe::ops::decayed_causal_linear_sums";
  check_causal_inputs(where, phi_q, phi_k, v, chunk);
  check_log_decay(where, log_decay, phi_q);
  if (phi_q.size(1) == 0) return {at::empty_like(v), at::empty({phi_q.size(0), 0, phi_q.size(2)}, phi_q.options())};
  const variable_list sums =
      CausalLinearAttentionFunction::apply(phi_q, phi_k, v, c10::optional<at::Tensor>(log_decay), /*eps: unused*/ 1.0,
                                           chunk, true);
  return {sums[0], sums[1]};
}

}  // namespace spe::ops
