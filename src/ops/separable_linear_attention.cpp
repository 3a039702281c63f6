#include "spe/ops/separable_linear_attention.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/separable_linear_attention.h"
#include "ops/fresh_tensor.h"
#include "ops/input_checks.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::cpu::SeparableShape separable_shape_of(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                                const at::Tensor& v, const at::Tensor& coefficients_q) {
  return {phi_q.size(0), phi_q.size(1), phi_k.size(1), phi_q.size(2), phi_q.size(3), coefficients_q.size(3),
          v.size(3)};
}

struct SeparableLinearNumeratorFunction : public torch::autograd::Function<SeparableLinearNumeratorFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& phi_q_in, const at::Tensor& phi_k_in,
                            const at::Tensor& v_in, const at::Tensor& c_q_in, const at::Tensor& c_k_in, bool causal) {
    at::Tensor phi_q = phi_q_in.contiguous(), phi_k = phi_k_in.contiguous(), v = v_in.contiguous();
    at::Tensor c_q = c_q_in.contiguous(), c_k = c_k_in.contiguous();
    const kernels::cpu::SeparableShape s = separable_shape_of(phi_q, phi_k, v, c_q);
    at::Tensor out = fresh_tensor({s.batch, s.queries, s.heads, s.value_dim}, v.options());
    // kv (B, H, M J, Dv): the non-causal sums, kept for the backward (the causal one remakes its states)
    at::Tensor kv = causal ? at::Tensor()
                           : at::empty({s.batch, s.heads, s.features * s.coefficients, s.value_dim}, v.options());
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "separable_linear_numerator_forward", [&] {
      kernels::cpu::separable_linear_numerator_forward<scalar_t>(
          s, causal, phi_q.data_ptr<scalar_t>(), phi_k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          c_q.data_ptr<scalar_t>(), c_k.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
          kv.defined() ? kv.data_ptr<scalar_t>() : nullptr);
    });
    ctx->save_for_backward({phi_q, phi_k, v, c_q, c_k, kv});
    ctx->saved_data["causal"] = causal;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &phi_q = saved[0], &phi_k = saved[1], &v = saved[2], &c_q = saved[3], &c_k = saved[4];
    const at::Tensor& kv = saved[5];
    const bool causal = ctx->saved_data["causal"].toBool();
    const at::Tensor grad_out = grads[0].contiguous();
    at::Tensor grad_phi_q = fresh_like(phi_q), grad_phi_k = fresh_like(phi_k), grad_v = fresh_like(v);
    at::Tensor grad_c_q = at::zeros_like(c_q), grad_c_k = at::zeros_like(c_k);  // the batch adds into them
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "separable_linear_numerator_backward", [&] {
      kernels::cpu::separable_linear_numerator_backward<scalar_t>(
          separable_shape_of(phi_q, phi_k, v, c_q), causal, phi_q.data_ptr<scalar_t>(), phi_k.data_ptr<scalar_t>(),
          v.data_ptr<scalar_t>(), c_q.data_ptr<scalar_t>(), c_k.data_ptr<scalar_t>(),
          kv.defined() ? kv.data_ptr<scalar_t>() : nullptr,
          grad_out.data_ptr<scalar_t>(), grad_phi_q.data_ptr<scalar_t>(), grad_phi_k.data_ptr<scalar_t>(),
          grad_v.data_ptr<scalar_t>(), grad_c_q.data_ptr<scalar_t>(), grad_c_k.data_ptr<scalar_t>());
    });
    return {grad_phi_q, grad_phi_k, grad_v, grad_c_q, grad_c_k, at::Tensor()};
  }
};

void check_separable_inputs(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                            const at::Tensor& c_q, const at::Tensor& c_k, bool causal) {
  const char* where = "spe::ops::separable_linear_numerator";
  TORCH_CHECK(phi_q.dim() == 4 && phi_k.dim() == 4 && v.dim() == 4 && c_q.dim() == 4 && c_k.dim() == 4, where,
              ": expected phi_q (B, Nq, H, M), phi_k (B, Nk, H, M), v (B, Nk, H, Dv), coefficients_q (Nq, H, M, J), "
              "coefficients_k (Nk, H, M, J), got ",
              phi_q.sizes(), ", ", phi_k.sizes(), ", ", v.sizes(), ", ", c_q.sizes(), ", ", c_k.sizes());
  const int64_t B = phi_q.size(0), Nq = phi_q.size(1), Nk = phi_k.size(1), H = phi_q.size(2), M = phi_q.size(3);
  TORCH_CHECK(phi_k.size(0) == B && phi_k.size(2) == H && phi_k.size(3) == M, where, ": phi_k ", phi_k.sizes(),
              " must agree with phi_q ", phi_q.sizes(), " on B, H and M");
  TORCH_CHECK(!causal || Nk == Nq, where, ": causal attention needs as many keys as queries, got ", Nk, " and ", Nq);
  TORCH_CHECK(v.size(0) == B && v.size(1) == Nk && v.size(2) == H, where, ": v ", v.sizes(),
              " must agree with phi_k ", phi_k.sizes(), " on B, N and H");
  TORCH_CHECK(c_q.size(0) == Nq && c_q.size(1) == H && c_q.size(2) == M, where, ": coefficients_q ", c_q.sizes(),
              " must be (Nq, H, M, J) = (", Nq, ", ", H, ", ", M, ", J)");
  TORCH_CHECK(c_k.size(0) == Nk && c_k.size(1) == H && c_k.size(2) == M && c_k.size(3) == c_q.size(3), where,
              ": coefficients_k ", c_k.sizes(), " must be (Nk, H, M, J) = (", Nk, ", ", H, ", ", M, ", ", c_q.size(3),
              ")");
  check_cpu_floating(where, {&phi_q, &phi_k, &v, &c_q, &c_k});
}

}  // namespace

at::Tensor separable_linear_numerator(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                      const at::Tensor& coefficients_q, const at::Tensor& coefficients_k, bool causal) {
  check_separable_inputs(phi_q, phi_k, v, coefficients_q, coefficients_k, causal);
  if (phi_q.numel() == 0 || phi_k.size(1) == 0 || coefficients_q.size(3) == 0)
    return at::zeros({phi_q.size(0), phi_q.size(1), phi_q.size(2), v.size(3)}, v.options());
  return SeparableLinearNumeratorFunction::apply(phi_q, phi_k, v, coefficients_q, coefficients_k, causal);
}

}  // namespace spe::ops
