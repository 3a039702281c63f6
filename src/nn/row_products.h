#pragma once
// Linear layers whose input is one row (decoding a single sequence: x (1, 1, E)) as
// matrix-vector products. Through LibTorch's GEMM path OpenBLAS packs the whole weight matrix at
// every call, which takes longer than the product itself (docs/BENCHMARKS.md, decoding).
#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <vector>

namespace spe::nn {

// x (..., in), weight (out, in), bias (out) or undefined -> x weight^T + bias: (..., out).
inline at::Tensor linear_rows(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {}) {
  if (x.dim() == 0 || x.numel() != x.size(-1)) return at::linear(x, weight, bias);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  const at::Tensor row = x.reshape({x.size(-1)});
  return (bias.defined() ? at::addmv(bias, weight, row) : at::mv(weight, row)).view(sizes);
}

inline at::Tensor linear_rows(const torch::nn::Linear& layer, const at::Tensor& x) {
  return linear_rows(x, layer->weight, layer->bias);
}

}  // namespace spe::nn
