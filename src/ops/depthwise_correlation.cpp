#include "spe/ops/depthwise_correlation.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "kernels/cpu/depthwise_correlation.h"
#include "ops/fresh_tensor.h"
#include "ops/input_checks.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A sequence is a grid of one row (X1 = S1 = 1).
kernels::cpu::CorrelationShape correlation_shape_of(const at::Tensor& x, const at::Tensor& filters) {
  if (x.dim() == 3) return {1, x.size(0), x.size(1), x.size(2), 1, filters.size(1)};
  return {x.size(0), x.size(1), x.size(2), x.size(3), filters.size(1), filters.size(2)};
}

// The output's shape: (X - S + 1, C, R) or (X1 - S1 + 1, X2 - S2 + 1, C, R).
std::vector<int64_t> output_shape(const at::Tensor& x, const at::Tensor& filters) {
  std::vector<int64_t> shape = x.sizes().vec();
  for (int64_t axis = 0; axis + 2 < x.dim(); ++axis) shape[axis] -= filters.size(1 + axis) - 1;
  return shape;
}

struct DepthwiseCorrelationFunction : public torch::autograd::Function<DepthwiseCorrelationFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& filters_in) {
    const at::Tensor x = x_in.contiguous(), filters = filters_in.contiguous();
    const kernels::cpu::CorrelationShape s = correlation_shape_of(x, filters);
    at::Tensor out = fresh_tensor(output_shape(x, filters), x.options());
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
      // grad_x[u] = sum_j filters[j] grad_out[u - j] (per axis): the correlation of grad_out, padded by
      // S - 1 zeros on both sides of each positional axis, with the filters reversed along them.
      std::vector<int64_t> padding{0, 0, 0, 0}, flipped;  // constant_pad_nd lists the last axis first
      for (int64_t axis = filters.dim() - 1; axis >= 1; --axis) padding.insert(padding.end(), 2, filters.size(axis) - 1);
      for (int64_t axis = 1; axis < filters.dim(); ++axis) flipped.push_back(axis);
      grad_x = depthwise_correlation(at::constant_pad_nd(grad_out, padding), filters.flip(flipped));
    }
    if (ctx->needs_input_grad(1)) {
      grad_filters = at::empty_like(filters);
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_correlation_weight_grad", [&] {
        kernels::cpu::depthwise_correlation_weight_grad<scalar_t>(
            correlation_shape_of(x, filters), x.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
            grad_filters.data_ptr<scalar_t>());
      });
    }
    return {grad_x, grad_filters};
  }
};

void check_correlation_inputs(const at::Tensor& x, const at::Tensor& filters) {
  const char* where = "spe::ops::depthwise_correlation";
  TORCH_CHECK((x.dim() == 3 && filters.dim() == 2) || (x.dim() == 4 && filters.dim() == 3), where,
              ": expected x (X, C, R) and filters (C, S), or x (X1, X2, C, R) and filters (C, S1, S2), got ", x.sizes(),
              " and ", filters.sizes());
  const int64_t axes = x.dim() - 2;
  TORCH_CHECK(filters.size(0) == x.size(axes), where, ": filters ", filters.sizes(),
              " must have one filter per channel of x ", x.sizes(), " (C = ", x.size(axes), ")");
  for (int64_t axis = 0; axis < axes; ++axis)
    TORCH_CHECK(filters.size(1 + axis) >= 1 && filters.size(1 + axis) <= x.size(axis), where, ": the filters' length ",
                filters.size(1 + axis), " along positional axis ", axis, " must be between 1 and the extent of x, ",
                x.size(axis));
  check_cpu_floating(where, {&x, &filters});
}

}  // namespace

at::Tensor depthwise_correlation(const at::Tensor& x, const at::Tensor& filters) {
  check_correlation_inputs(x, filters);
  if (x.size(-2) == 0 || x.size(-1) == 0) return at::zeros(output_shape(x, filters), x.options());
  return DepthwiseCorrelationFunction::apply(x, filters);
}

}  // namespace spe::ops
