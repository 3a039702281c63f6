#include "spe/attention/softmax.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "spe/encoding/relative.h"

namespace spe {

void check_qkv(const char* where, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4, where, ": queries must be (B, Nq, H, D), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 4, where, ": keys must be (B, Nk, H, D), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 4, where, ": values must be (B, Nk, H, Dv), got shape ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3), where,
              ": queries ", q.sizes(), " and keys ", k.sizes(), " must agree on B, H and D");
  TORCH_CHECK(k.size(0) == v.size(0) && k.size(1) == v.size(1) && k.size(2) == v.size(2), where,
              ": keys ", k.sizes(), " and values ", v.sizes(), " must agree on B, Nk and H");
  TORCH_CHECK(at::isFloatingType(q.scalar_type()), where, ": inputs must be floating point, got ",
              q.scalar_type());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), where,
              ": queries, keys and values must share a dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), where,
              ": queries, keys and values must be on one device, got ", q.device(), ", ",
              k.device(), ", ", v.device());
}

at::Tensor softmax_attention_weights(const at::Tensor& q, const at::Tensor& k,
                                     const AttentionMask& mask,
                                     const RelativePositionImpl* relative, const at::Tensor& score_bias) {
  mask.check(q.size(0), k.size(1));
  // (B, H, Nq, Nk)
  at::Tensor scores = at::einsum("bihd,bjhd->bhij", {q, k});
  if (relative != nullptr) scores = scores + relative->key_logits(q, k.size(1));
  scores = scores / std::sqrt(static_cast<double>(q.size(3)));
  if (score_bias.defined()) {
    TORCH_CHECK(score_bias.dim() == 3 && score_bias.size(0) == q.size(2) && score_bias.size(1) == q.size(1) &&
                    score_bias.size(2) == k.size(1),
                "softmax_attention: score_bias must be (H, Nq, Nk) = (", q.size(2), ", ", q.size(1), ", ", k.size(1),
                "), got ", score_bias.sizes());
    scores = scores + score_bias;
  }
  at::Tensor allowed = mask.allowed(q.size(1), k.size(1), q.device());
  if (!allowed.defined()) return at::softmax(scores, -1);
  // A stable softmax that gives zeros, not NaN, to a row without any allowed key.
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  at::Tensor row_max = std::get<0>(scores.max(-1, /*keepdim=*/true));
  row_max = at::where(at::isinf(row_max), at::zeros_like(row_max), row_max).detach();
  at::Tensor e = at::exp(scores - row_max);
  at::Tensor total = e.sum(-1, /*keepdim=*/true);
  return e / at::where(total > 0, total, at::ones_like(total));
}

at::Tensor softmax_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionMask& mask, const RelativePositionImpl* relative,
                             const at::Tensor& score_bias) {
  check_qkv("softmax_attention", q, k, v);
  TORCH_CHECK(relative == nullptr || !relative->options.on_values() ||
                  v.size(3) == relative->options.dim(),
              "softmax_attention: values have Dv = ", v.size(3),
              " but the relative value table has dim ", relative->options.dim());
  at::Tensor weights = softmax_attention_weights(q, k, mask, relative, score_bias);
  at::Tensor out = at::einsum("bhij,bjhd->bihd", {weights, v});
  if (relative != nullptr && relative->options.on_values()) out = out + relative->value_term(weights);
  return out;
}

}  // namespace spe
