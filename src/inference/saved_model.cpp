#include "spe/inference/saved_model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace spe::inference {

nn::Model build_model(const train::Config& config, const data::DatasetInfo& data) {
  nn::ModelOptions options = config.model;
  options.transformer().vocab_size(data.vocab_size).grid(data.grid);
  options.num_classes(data.num_classes);
  if (options.kind() == nn::ModelKind::dual_encoder && data.fields != 2)
    throw std::invalid_argument(fmt::format("model.kind dual_encoder needs a dataset of pairs; '{}' has single sequences",
                                            data.task));
  const nn::PositionalOptions& p = options.transformer().positional();
  if (p.kind() == nn::PositionalKind::conv_spe && p.conv_ndim() == 2 && data.grid.size() != 2)
    throw std::invalid_argument(fmt::format("model.positional.conv_ndim 2 needs an image dataset (with a grid); '{}' has "
                                            "none",
                                            data.task));
  if (options.kind() != nn::ModelKind::dual_encoder && data.fields != 1)
    throw std::invalid_argument(
        fmt::format("the dataset '{}' holds pairs: set model.kind to dual_encoder", data.task));
  nn::Model model(options);
  if (config.train.dtype == train::Precision::float64) model->to(at::kDouble);
  return model;
}

SavedModel load_saved_model(const std::string& checkpoint) {
  const train::CheckpointHeader header = train::read_checkpoint_header(checkpoint);
  nn::Model model = build_model(header.config, header.data);
  train::load_checkpoint(checkpoint, *model, nullptr, &header.config);
  model->eval();
  return {header, model};
}

}  // namespace spe::inference
