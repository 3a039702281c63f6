#include "spe/ops/apply_spe_code.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/apply_spe_code.h"
#include "ops/fresh_tensor.h"
#include "ops/input_checks.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::cpu::CodeShape code_shape_of(const at::Tensor& x, const at::Tensor& code) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), code.size(3)};
}

struct ApplySPECodeFunction : public torch::autograd::Function<ApplySPECodeFunction> {
  // code_in has exactly N rows (the caller narrows it)
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& code_in) {
    const at::Tensor x = x_in.contiguous(), code = code_in.contiguous();
    const kernels::cpu::CodeShape s = code_shape_of(x, code);
    at::Tensor out = fresh_tensor({s.batch, s.length, s.heads, s.realizations}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "apply_spe_code_forward", [&] {
      kernels::cpu::apply_spe_code_forward<scalar_t>(s, x.data_ptr<scalar_t>(), code.data_ptr<scalar_t>(),
                                                      out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({x, code});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &code = saved[1];
    const at::Tensor grad_out = grads[0].contiguous();
    const at::Tensor grad_x = ctx->needs_input_grad(0) ? fresh_like(x) : at::Tensor();
    const at::Tensor grad_code = ctx->needs_input_grad(1) ? fresh_like(code) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "apply_spe_code_backward", [&] {
      kernels::cpu::apply_spe_code_backward<scalar_t>(
          code_shape_of(x, code), x.data_ptr<scalar_t>(), code.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
          grad_x.defined() ? grad_x.data_ptr<scalar_t>() : nullptr,
          grad_code.defined() ? grad_code.data_ptr<scalar_t>() : nullptr);
    });
    return {grad_x, grad_code};
  }
};

void check_code_inputs(const at::Tensor& x, const at::Tensor& code) {
  const char* where = "spe::ops::apply_spe_code";
  TORCH_CHECK(x.dim() == 4 && code.dim() == 4, where, ": expected x (B, N, H, D) and code (N, H, D, R), got ",
              x.sizes(), " and ", code.sizes());
  TORCH_CHECK(code.size(1) == x.size(2) && code.size(2) == x.size(3), where, ": the code has (H, D) = (",
              code.size(1), ", ", code.size(2), ") but x has (", x.size(2), ", ", x.size(3), ")");
  TORCH_CHECK(x.size(1) <= code.size(0), where, ": ", x.size(1), " positions exceed the code's ", code.size(0));
  check_cpu_floating(where, {&x, &code});
}

}  // namespace

at::Tensor apply_spe_code(const at::Tensor& x, const at::Tensor& code) {
  check_code_inputs(x, code);
  const at::Tensor rows = code.narrow(0, 0, x.size(1));
  if (x.numel() == 0 || code.size(3) == 0 || x.size(3) == 0)
    return at::einsum("bnhd,nhdr->bnhr", {x, rows});  // empty: nothing for the kernel to do
  return ApplySPECodeFunction::apply(x, rows);
}

}  // namespace spe::ops
