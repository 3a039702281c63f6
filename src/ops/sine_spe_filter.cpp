#include "spe/ops/sine_spe_filter.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/cpu/sine_spe_filter.h"
#include "ops/fresh_tensor.h"

namespace spe::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::cpu::SineFilterShape filter_shape_of(const at::Tensor& x, const at::Tensor& weights, int64_t first_position) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), weights.size(2) / 2, weights.size(3), first_position};
}

struct SineSPEFilterFunction : public torch::autograd::Function<SineSPEFilterFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& f_in,
                            const at::Tensor& theta_in, const at::Tensor& w_in, const at::Tensor& a_in,
                            const at::Tensor& c_in, int64_t first_position) {
    at::Tensor x = x_in.contiguous(), f = f_in.contiguous(), theta = theta_in.contiguous(), w = w_in.contiguous();
    at::Tensor a = a_in.contiguous(), c = c_in.contiguous();
    at::Tensor out = fresh_tensor({x.size(0), x.size(1), x.size(2), w.size(3)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sine_spe_filter_forward", [&] {
      kernels::cpu::sine_spe_filter_forward<scalar_t>(
          filter_shape_of(x, w, first_position), x.data_ptr<scalar_t>(), f.data_ptr<double>(), theta.data_ptr<double>(),
          w.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({x, f, theta, w, a, c});
    ctx->saved_data["first_position"] = first_position;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &f = saved[1], &theta = saved[2], &w = saved[3], &a = saved[4], &c = saved[5];
    const int64_t first_position = ctx->saved_data["first_position"].toInt();
    at::Tensor grad_out = grads[0].contiguous();
    at::Tensor grad_x = fresh_like(x), grad_f = at::empty_like(f), grad_theta = at::empty_like(theta);
    at::Tensor grad_w = at::empty_like(w);
    at::Tensor grad_a = at::empty_like(a), grad_c = at::empty_like(c);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sine_spe_filter_backward", [&] {
      kernels::cpu::sine_spe_filter_backward<scalar_t>(
          filter_shape_of(x, w, first_position), x.data_ptr<scalar_t>(), f.data_ptr<double>(), theta.data_ptr<double>(),
          w.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
          grad_out.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), grad_f.data_ptr<double>(),
          grad_theta.data_ptr<double>(), grad_w.data_ptr<scalar_t>(),
          grad_a.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>());
    });
    return {grad_x, grad_f, grad_theta, grad_w, grad_a, grad_c, at::Tensor()};
  }
};

void check_filter_inputs(const at::Tensor& x, const at::Tensor& f, const at::Tensor& theta, const at::Tensor& w,
                         const at::Tensor& a, const at::Tensor& c, int64_t first_position) {
  const char* where = "spe::ops::sine_spe_filter";
  TORCH_CHECK(x.dim() == 4, where, ": x must be (B, N, H, D), got shape ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), where, ": the fused kernel runs on CPU, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, where,
              ": float32 or float64 expected, got ", x.scalar_type());
  const int64_t H = x.size(2), D = x.size(3);
  TORCH_CHECK(f.dim() == 3 && f.size(0) == H && f.size(1) == D, where, ": frequencies must be (H, D, K) = (", H,
              ", ", D, ", K), got ", f.sizes());
  TORCH_CHECK(theta.sizes() == f.sizes(), where, ": phases ", theta.sizes(), " must match frequencies ", f.sizes());
  TORCH_CHECK(f.scalar_type() == at::kDouble && theta.scalar_type() == at::kDouble, where,
              ": frequencies and phases must be float64, got ", f.scalar_type(), " and ", theta.scalar_type());
  const int64_t K = f.size(2);
  TORCH_CHECK(w.dim() == 4 && w.size(0) == H && w.size(1) == D && w.size(2) == 2 * K, where,
              ": weights must be (H, D, 2K, R) = (", H, ", ", D, ", ", 2 * K, ", R), got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), where, ": weights are ", w.scalar_type(), " but x is ",
              x.scalar_type());
  TORCH_CHECK(!a.defined() || (a.sizes() == at::IntArrayRef({H, D}) && a.scalar_type() == x.scalar_type()), where,
              ": gate_scale must be (H, D) = (", H, ", ", D, ") of x's dtype, got ", a.sizes(), " ",
              a.defined() ? a.scalar_type() : x.scalar_type());
  TORCH_CHECK(!c.defined() || (c.sizes() == at::IntArrayRef({H, D, w.size(3)}) && c.scalar_type() == x.scalar_type()),
              where, ": gate_shift must be (H, D, R) = (", H, ", ", D, ", ", w.size(3), ") of x's dtype, got ",
              c.sizes());
  TORCH_CHECK(first_position >= 0, where, ": first_position must be >= 0, got ", first_position);
}

}  // namespace

at::Tensor sine_spe_filter(const at::Tensor& x, const at::Tensor& frequencies, const at::Tensor& phases,
                           const at::Tensor& weights, const at::Tensor& gate_scale, const at::Tensor& gate_shift,
                           int64_t first_position) {
  check_filter_inputs(x, frequencies, phases, weights, gate_scale, gate_shift, first_position);
  // LibTorch 1.13's custom functions take no undefined inputs: an absent gate is a = 1, c = 0.
  const at::Tensor a = gate_scale.defined() ? gate_scale : at::ones({x.size(2), x.size(3)}, weights.options());
  const at::Tensor c = gate_shift.defined() ? gate_shift : at::zeros({x.size(2), x.size(3), weights.size(3)}, weights.options());
  return SineSPEFilterFunction::apply(x, frequencies, phases, weights, a, c, first_position);
}

at::Tensor sine_spe_filter(const at::Tensor& x, const SineCodeFactors& code, bool query_side,
                           int64_t first_position) {
  TORCH_CHECK(x.dim() == 4, "spe::ops::sine_spe_filter: x must be (B, N, H, D), got shape ", x.sizes());
  TORCH_CHECK(first_position >= 0 && x.size(1) <= code.length - first_position,
              "spe::ops::sine_spe_filter: ", x.size(1), " positions from row ", first_position,
              " exceed the code length ", code.length);
  const at::Tensor phases = query_side ? code.offsets : at::zeros_like(code.offsets);
  return sine_spe_filter(x, code.frequencies, phases, code.weights, code.gate_scale, code.gate_shift,
                         first_position);
}

at::Tensor sine_spe_filter_position(const at::Tensor& x_in, const at::Tensor& coefficients_in,
                                    const at::Tensor& rows_in) {
  const char* where = "spe::ops::sine_spe_filter_position";
  TORCH_CHECK(x_in.dim() == 4 && x_in.size(1) == 1, where, ": x must be (B, 1, H, D), got shape ", x_in.sizes());
  TORCH_CHECK(x_in.device().is_cpu(), where, ": the fused kernel runs on CPU, got ", x_in.device());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble, where,
              ": float32 or float64 expected, got ", x_in.scalar_type());
  const int64_t H = x_in.size(2), D = x_in.size(3);
  TORCH_CHECK(coefficients_in.dim() == 3 && coefficients_in.size(0) == H && coefficients_in.size(1) == D &&
                  coefficients_in.size(2) % 2 == 1,
              where, ": coefficients must be (H, D, 2K + 1) with (H, D) = (", H, ", ", D, "), got ",
              coefficients_in.sizes());
  const int64_t J1 = coefficients_in.size(2);
  TORCH_CHECK(rows_in.dim() == 4 && rows_in.size(0) == H && rows_in.size(1) == D && rows_in.size(2) == J1, where,
              ": rows must be (H, D, 2K + 1, R) = (", H, ", ", D, ", ", J1, ", R), got ", rows_in.sizes());
  TORCH_CHECK(coefficients_in.scalar_type() == x_in.scalar_type() && rows_in.scalar_type() == x_in.scalar_type(),
              where, ": coefficients (", coefficients_in.scalar_type(), ") and rows (", rows_in.scalar_type(),
              ") must have x's dtype ", x_in.scalar_type());
  TORCH_CHECK(coefficients_in.device() == x_in.device() && rows_in.device() == x_in.device(), where,
              ": coefficients and rows must be on x's device ", x_in.device());
  TORCH_CHECK(!at::GradMode::is_enabled() ||
                  !(x_in.requires_grad() || coefficients_in.requires_grad() || rows_in.requires_grad()),
              where, ": forward only; run it under at::NoGradGuard (decoding), or use sine_spe_filter for gradients");
  const at::Tensor x = x_in.contiguous(), coefficients = coefficients_in.contiguous(), rows = rows_in.contiguous();
  at::Tensor out = at::empty({x.size(0), 1, H, rows.size(3)}, x.options());
  const kernels::cpu::SineFilterShape shape{x.size(0), 1, H, D, (J1 - 1) / 2, rows.size(3), 0};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sine_spe_filter_position", [&] {
    kernels::cpu::sine_spe_filter_position<scalar_t>(shape, x.data_ptr<scalar_t>(), coefficients.data_ptr<scalar_t>(),
                                                     rows.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace spe::ops
