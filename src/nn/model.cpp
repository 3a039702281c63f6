#include "spe/nn/model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/modules/activation.h>

#include "row_products.h"

namespace spe::nn {

ModelImpl::ModelImpl(const ModelOptions& options_) : options(options_) {
  options.transformer().causal(options.kind() == ModelKind::language_model);
  options.transformer().cls_token(options.kind() != ModelKind::language_model && options.pooling() == Pooling::cls);
  reset();
}

void ModelImpl::reset() {
  if (options.kind() != ModelKind::language_model && options.num_classes() < 2)
    throw std::invalid_argument(fmt::format("num_classes is {}, a classifier needs at least 2", options.num_classes()));
  transformer = register_module("transformer", Transformer(options.transformer()));
  const int64_t e = options.transformer().dim();
  switch (options.kind()) {
    case ModelKind::classifier:
    case ModelKind::dual_encoder: {
      const int64_t inputs = options.kind() == ModelKind::dual_encoder ? 4 * e : e;
      head = register_module("head", torch::nn::Sequential(torch::nn::Linear(inputs, e), torch::nn::ReLU(),
                                                           torch::nn::Linear(e, options.num_classes())));
      break;
    }
    case ModelKind::language_model:
      if (!options.tie_embeddings())
        output_layer = register_module("output_layer", torch::nn::Linear(e, options.transformer().vocab_size()));
      break;
  }
}

void ModelImpl::pretty_print(std::ostream& stream) const {
  const auto& t = options.transformer();
  stream << "spe::nn::Model(" << choice_name(options.kind(), kModelKinds) << ", layers=" << t.layers()
         << ", dim=" << t.dim() << ", heads=" << t.heads() << ", attention="
         << choice_name(t.attention().kind(), kAttentionKinds)
         << ", positional=" << choice_name(t.positional().kind(), kPositionalKinds) << ")";
}

// (B, N, E) encodings -> (B, E): the [CLS] position, or the mean over real tokens.
at::Tensor ModelImpl::pool(const at::Tensor& tokens, const at::Tensor& padding, OptionalGenerator generator) {
  const at::Tensor h = transformer(tokens, padding, generator);
  if (options.pooling() == Pooling::cls) return h.select(1, 0);
  if (!padding.defined()) return h.mean(1);
  const at::Tensor weights = padding.to(h.scalar_type()).unsqueeze(-1);  // (B, N, 1)
  return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0);
}

at::Tensor ModelImpl::forward(const at::Tensor& tokens, const at::Tensor& padding, const at::Tensor& tokens_b,
                              const at::Tensor& padding_b, OptionalGenerator generator) {
  switch (options.kind()) {
    case ModelKind::classifier:
      return head->forward(pool(tokens, padding, generator));
    case ModelKind::dual_encoder: {
      TORCH_CHECK(tokens_b.defined(), "dual_encoder: the second sequence of each pair is missing (a pair dataset is expected)");
      const at::Tensor u = pool(tokens, padding, generator), v = pool(tokens_b, padding_b, generator);
      return head->forward(at::cat({u, v, u * v, u - v}, -1));
    }
    case ModelKind::language_model:
      return next_token_logits(transformer(tokens, padding, generator));
  }
  throw std::logic_error("Model: unknown kind");
}

at::Tensor ModelImpl::next_token_logits(const at::Tensor& h) {
  TORCH_CHECK(options.kind() == ModelKind::language_model, "Model: next-token logits need a language model, this is a ",
              choice_name(options.kind(), kModelKinds));
  return output_layer ? linear_rows(output_layer, h) : linear_rows(h, transformer->embedding->weight);
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& p : module.parameters()) count += p.numel();
  return count;
}

bool softmax_attention(const ModelOptions& options) {
  return options.transformer().attention().kind() == AttentionKind::softmax;
}

int64_t parameter_bytes(const torch::nn::Module& module) {
  int64_t bytes = 0;
  for (const auto& p : module.parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

}  // namespace spe::nn
