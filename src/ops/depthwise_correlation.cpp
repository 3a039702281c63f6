#include "spe/ops/depthwise_correlation.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/depthwise_correlation.h"
#include "ops/fresh_tensor.h"
#include "ops/input_checks.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::cpu::CorrelationShape shape_of(const at::Tensor& x, const at::Tensor& filters) {
  return {x.size(0), x.size(1), x.size(2), filters.size(1)};
}

struct DepthwiseCorrelationFunction : public torch::autograd::Function<DepthwiseCorrelationFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& filters_in) {
    const at::Tensor x = x_in.contiguous(), filters = filters_in.contiguous();
    const kernels::cpu::CorrelationShape s = shape_of(x, filters);
    at::Tensor out = fresh_tensor({s.outputs(), s.channels, s.realizations}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_correlation_forward", [&] {
      kernels::cpu::depthwise_correlation_forward<scalar_t>(s, x.data_ptr<scalar_t>(), filters.data_ptr<scalar_t>(),
                                                             out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({x, filters});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &filters = saved[1];
    const at::Tensor grad_out = grads[0].contiguous();
    at::Tensor grad_x, grad_filters;
    if (ctx->needs_input_grad(0)) {
      // grad_x[u] = sum_j filters[j] grad_out[u - j]: the correlation of grad_out, padded by S - 1 zero
      // rows on both sides, with the filters reversed.
      const int64_t pad = filters.size(1) - 1;
      grad_x = depthwise_correlation(at::constant_pad_nd(grad_out, {0, 0, 0, 0, pad, pad}), filters.flip({1}));
    }
    if (ctx->needs_input_grad(1)) {
      grad_filters = at::empty_like(filters);
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_correlation_weight_grad", [&] {
        kernels::cpu::depthwise_correlation_weight_grad<scalar_t>(shape_of(x, filters), x.data_ptr<scalar_t>(),
                                                                   grad_out.data_ptr<scalar_t>(),
                                                                   grad_filters.data_ptr<scalar_t>());
      });
    }
    return {grad_x, grad_filters};
  }
};

void check_inputs(const at::Tensor& x, const at::Tensor& filters) {
  const char* where = "spe::ops::depthwise_correlation";
  TORCH_CHECK(x.dim() == 3 && filters.dim() == 2, where, ": expected x (X, C, R) and filters (C, S), got ",
              x.sizes(), " and ", filters.sizes());
  TORCH_CHECK(filters.size(0) == x.size(1), where, ": filters ", filters.sizes(), " must have one row per channel of x ",
              x.sizes(), " (C = ", x.size(1), ")");
  TORCH_CHECK(filters.size(1) >= 1 && filters.size(1) <= x.size(0), where, ": the filters' length S = ", filters.size(1),
              " must be between 1 and the extent of x, ", x.size(0));
  check_cpu_floating(where, {&x, &filters});
}

}  // namespace

at::Tensor depthwise_correlation(const at::Tensor& x, const at::Tensor& filters) {
  check_inputs(x, filters);
  if (x.size(1) == 0 || x.size(2) == 0)
    return at::zeros({x.size(0) - filters.size(1) + 1, x.size(1), x.size(2)}, x.options());
  return DepthwiseCorrelationFunction::apply(x, filters);
}

}  // namespace spe::ops
