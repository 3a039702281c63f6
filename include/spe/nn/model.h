#pragma once
// The three models, one transformer each, built from options (or a config, see train/config.h):
//   classifier:      pooled encoding -> MLP -> class logits (B, C)
//   dual_encoder:    the same encoder on both sequences of a pair; [u, v, u*v, u-v] -> MLP -> (B, C)
//   language_model:  causal transformer -> next-token logits (B, N, V)
#include <torch/nn/modules/container/sequential.h>

#include "spe/nn/transformer.h"

namespace spe::nn {

enum class ModelKind { classifier, dual_encoder, language_model };
inline constexpr Choice<ModelKind> kModelKinds[] = {{"classifier", ModelKind::classifier},
                                                    {"dual_encoder", ModelKind::dual_encoder},
                                                    {"language_model", ModelKind::language_model}};

enum class Pooling { mean, cls };
inline constexpr Choice<Pooling> kPoolings[] = {{"mean", Pooling::mean}, {"cls", Pooling::cls}};

struct ModelOptions {
  ModelOptions(ModelKind kind, TransformerOptions transformer) : kind_(kind), transformer_(std::move(transformer)) {}
  TORCH_ARG(ModelKind, kind);
  TORCH_ARG(TransformerOptions, transformer);  // causal and cls_token are set from kind and pooling
  TORCH_ARG(int64_t, num_classes) = 2;         // classifier, dual_encoder
  TORCH_ARG(Pooling, pooling) = Pooling::mean; // classifier, dual_encoder
  TORCH_ARG(bool, tie_embeddings) = false;     // language_model: output layer = embedding^T
};

class ModelImpl : public torch::nn::Cloneable<ModelImpl> {
 public:
  explicit ModelImpl(const ModelOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // tokens, padding: (B, N) int64 and bool (true = real); for pairs also tokens_b, padding_b.
  // -> (B, C) class logits, or (B, N, V) next-token logits for a language model.
  // generator: the SPE draws (TransformerImpl::forward), LibTorch's default one when absent.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& padding, const at::Tensor& tokens_b = {},
                     const at::Tensor& padding_b = {}, OptionalGenerator generator = c10::nullopt);
  // A language model's next-token logits (B, N, V) from the final encodings h (B, N, E).
  at::Tensor next_token_logits(const at::Tensor& h);
  ModelOptions options;
  Transformer transformer{nullptr};
  torch::nn::Sequential head{nullptr};        // classifier and dual encoder
  torch::nn::Linear output_layer{nullptr};    // language model, unless tied

 private:
  at::Tensor pool(const at::Tensor& tokens, const at::Tensor& padding, OptionalGenerator generator);
};
TORCH_MODULE(Model);

int64_t parameter_count(const torch::nn::Module& module);
// The bytes of its parameters: what a decoding step reads once.
int64_t parameter_bytes(const torch::nn::Module& module);
// Whether its attention is softmax: its scores are B x H small matrix products per operation.
bool softmax_attention(const ModelOptions& options);

}  // namespace spe::nn
