#include "spe/ops/causal_linear_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/causal_linear_attention.h"
#include "ops/fresh_tensor.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::cpu::CausalShape shape_of(const at::Tensor& q, const at::Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

struct CausalLinearAttentionFunction : public torch::autograd::Function<CausalLinearAttentionFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_in, const at::Tensor& k_in,
                            const at::Tensor& v_in, double eps, int64_t chunk) {
    at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    at::Tensor out = fresh_like(v);
    at::Tensor den = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_linear_attention_forward", [&] {
      kernels::cpu::causal_linear_attention_forward<scalar_t>(
          shape_of(q, v), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          static_cast<scalar_t>(eps), chunk, out.data_ptr<scalar_t>(), den.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({q, k, v, out, den});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["chunk"] = chunk;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &den = saved[4];
    at::Tensor grad_out = grads[0].contiguous();
    at::Tensor grad_q = fresh_like(q), grad_k = fresh_like(k), grad_v = fresh_like(v);
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "causal_linear_attention_backward", [&] {
      kernels::cpu::causal_linear_attention_backward<scalar_t>(
          shape_of(q, v), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), den.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
          static_cast<scalar_t>(eps), chunk, grad_q.data_ptr<scalar_t>(), grad_k.data_ptr<scalar_t>(),
          grad_v.data_ptr<scalar_t>());
    });
    return {grad_q, grad_k, grad_v, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor causal_linear_attention(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                   double eps, int64_t chunk) {
  TORCH_CHECK(phi_q.dim() == 4 && phi_k.dim() == 4 && v.dim() == 4,
              "spe::ops::causal_linear_attention: inputs must be (B, N, H, M), (B, N, H, M), (B, N, H, Dv), got ",
              phi_q.sizes(), ", ", phi_k.sizes(), ", ", v.sizes());
  TORCH_CHECK(phi_q.sizes() == phi_k.sizes(), "spe::ops::causal_linear_attention: phi_q ", phi_q.sizes(),
              " and phi_k ", phi_k.sizes(), " must have the same shape");
  TORCH_CHECK(v.size(0) == phi_q.size(0) && v.size(1) == phi_q.size(1) && v.size(2) == phi_q.size(2),
              "spe::ops::causal_linear_attention: values ", v.sizes(), " must agree with phi_q ",
              phi_q.sizes(), " on B, N and H");
  TORCH_CHECK(phi_q.device().is_cpu() && phi_k.device().is_cpu() && v.device().is_cpu(),
              "spe::ops::causal_linear_attention: the fused kernel runs on CPU, got ", phi_q.device());
  TORCH_CHECK(phi_q.scalar_type() == at::kFloat || phi_q.scalar_type() == at::kDouble,
              "spe::ops::causal_linear_attention: float32 or float64 expected, got ", phi_q.scalar_type());
  TORCH_CHECK(phi_k.scalar_type() == phi_q.scalar_type() && v.scalar_type() == phi_q.scalar_type(),
              "spe::ops::causal_linear_attention: inputs must share a dtype, got ", phi_q.scalar_type(),
              ", ", phi_k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(eps > 0, "spe::ops::causal_linear_attention: eps must be positive, got ", eps);
  TORCH_CHECK(chunk > 0 && chunk <= 4096, "spe::ops::causal_linear_attention: chunk must be in [1, 4096], got ", chunk);
  if (phi_q.size(1) == 0) return at::empty_like(v);
  return CausalLinearAttentionFunction::apply(phi_q, phi_k, v, eps, chunk);
}

}  // namespace spe::ops
