// Registers the fused ops with the PyTorch dispatcher, so that Python reaches them as
// torch.ops.spe.* after torch.ops.load_library("libspe_torch_ops.so"). All are differentiable:
// the C++ implementations record their own backward with autograd.
#include <torch/library.h>

#include "spe/ops/apply_spe_code.h"
#include "spe/ops/causal_linear_attention.h"
#include "spe/ops/depthwise_correlation.h"
#include "spe/ops/relative_buckets.h"
#include "spe/ops/separable_linear_attention.h"
#include "spe/ops/sine_spe_filter.h"

namespace {

at::Tensor sine_spe_filter_op(const at::Tensor& x, const at::Tensor& frequencies, const at::Tensor& phases,
                              const at::Tensor& weights, const c10::optional<at::Tensor>& gate_scale,
                              const c10::optional<at::Tensor>& gate_shift, int64_t first_position) {
  return spe::ops::sine_spe_filter(x, frequencies, phases, weights, gate_scale.value_or(at::Tensor()),
                                   gate_shift.value_or(at::Tensor()), first_position);
}

at::Tensor causal_linear_attention_op(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                      double eps, int64_t chunk) {
  return spe::ops::causal_linear_attention(phi_q, phi_k, v, eps, chunk);
}

at::Tensor decayed_causal_linear_attention_op(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                              const at::Tensor& log_decay, double eps, int64_t chunk) {
  return spe::ops::decayed_causal_linear_attention(phi_q, phi_k, v, log_decay, eps, chunk);
}

std::tuple<at::Tensor, at::Tensor> decayed_causal_linear_sums_op(const at::Tensor& phi_q, const at::Tensor& phi_k,
                                                                 const at::Tensor& v, const at::Tensor& log_decay,
                                                                 int64_t chunk) {
  return spe::ops::decayed_causal_linear_sums(phi_q, phi_k, v, log_decay, chunk);
}

}  // namespace

TORCH_LIBRARY(spe, m) {
  const std::string chunk = std::to_string(spe::ops::kCausalChunk);
  m.def(("causal_linear_attention(Tensor phi_q, Tensor phi_k, Tensor v, float eps=1e-06, int chunk=" + chunk + ") -> Tensor")
            .c_str(),
        &causal_linear_attention_op);
  m.def(
      ("decayed_causal_linear_attention(Tensor phi_q, Tensor phi_k, Tensor v, Tensor log_decay, float eps=1e-06, "
       "int chunk=" + chunk + ") -> Tensor")
          .c_str(),
      &decayed_causal_linear_attention_op);
  m.def(("decayed_causal_linear_sums(Tensor phi_q, Tensor phi_k, Tensor v, Tensor log_decay, int chunk=" + chunk +
         ") -> (Tensor, Tensor)")
            .c_str(),
        &decayed_causal_linear_sums_op);
  m.def("apply_spe_code(Tensor x, Tensor code) -> Tensor", &spe::ops::apply_spe_code);
  m.def("depthwise_correlation(Tensor x, Tensor filters) -> Tensor", &spe::ops::depthwise_correlation);
  m.def("expand_relative_buckets(Tensor per_bucket, int key_length) -> Tensor", &spe::ops::expand_relative_buckets);
  m.def("sum_relative_buckets(Tensor per_key, int clip) -> Tensor", &spe::ops::sum_relative_buckets);
  m.def(
      "separable_linear_numerator(Tensor phi_q, Tensor phi_k, Tensor v, Tensor coefficients_q, Tensor coefficients_k, "
      "bool causal=False) -> Tensor",
      &spe::ops::separable_linear_numerator);
  m.def(
      "sine_spe_filter(Tensor x, Tensor frequencies, Tensor phases, Tensor weights, Tensor? gate_scale=None, "
      "Tensor? gate_shift=None, int first_position=0) -> Tensor",
      &sine_spe_filter_op);
}
