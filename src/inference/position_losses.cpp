#include "spe/inference/position_losses.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "spe/random.h"

namespace spe::inference {

PositionLosses position_losses(nn::ModelImpl& model, const data::Dataset& dataset, int64_t length,
                               int64_t batch_size, uint64_t seed) {
  if (model.options.kind() != nn::ModelKind::language_model)
    throw std::invalid_argument("per-position losses need a language model");
  if (length < 2 || batch_size < 1)
    throw std::invalid_argument(fmt::format("length {} and batch size {} must be at least 2 and 1", length, batch_size));
  // (sequence, first token) of every window
  std::vector<std::pair<int64_t, int64_t>> windows;
  for (int64_t i = 0; i < dataset.size(); ++i)
    for (int64_t start = 0; start + length <= static_cast<int64_t>(dataset.sequence(i).size); start += length)
      windows.emplace_back(i, start);
  if (windows.empty())
    throw std::invalid_argument(fmt::format("no sequence of the {} split has {} tokens (its longest: use a shorter "
                                            "length or longer sequences)",
                                            dataset.info().split, length));
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard no_grad;
  at::Generator generator = make_generator(seed);
  at::Tensor sums = at::zeros({length - 1}, at::kDouble);
  for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(windows.size(), first + static_cast<size_t>(batch_size));
    at::Tensor tokens = at::empty({static_cast<int64_t>(last - first), length}, at::kLong);
    auto rows = tokens.accessor<int64_t, 2>();
    for (size_t w = first; w < last; ++w) {
      const data::TokenSpan span = dataset.sequence(windows[w].first);
      for (int64_t n = 0; n < length; ++n) rows[static_cast<int64_t>(w - first)][n] = span.data[windows[w].second + n];
    }
    const at::Tensor logits = model.forward(tokens, {}, {}, {}, generator).narrow(1, 0, length - 1);  // (B, N-1, V)
    const at::Tensor nll = -at::log_softmax(logits.to(at::kDouble), -1)
                                .gather(-1, tokens.narrow(1, 1, length - 1).unsqueeze(-1))
                                .squeeze(-1);  // (B, N-1)
    sums += nll.sum(0);
  }
  model.train(was_training);
  PositionLosses out;
  out.windows = static_cast<int64_t>(windows.size());
  const at::Tensor mean = sums / static_cast<double>(windows.size());
  out.loss.assign(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
  return out;
}

}  // namespace spe::inference
