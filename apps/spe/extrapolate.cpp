// `spe extrapolate`: language models evaluated on sequences longer than they were trained on:
// the next-token loss by position, binned, for each checkpoint, as a table, JSON lines and a plot.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "gnuplot.h"
#include "spe/encoding/rotary.h"
#include "spe/inference/position_losses.h"
#include "spe/inference/saved_model.h"
#include "spe/nn/model.h"
#include "spe/util/files.h"
#include "spe/util/threads.h"

namespace spe::cli {
namespace {

struct ExtrapolateArgs {
  std::vector<std::string> checkpoints;
  std::string data_dir, split = "test", png, json;
  int64_t length = 0, bins = 32, batch_size = 8, seed = 1;
  std::string rope_scaling = "none";
  double factor = 0;  // 0: --length over each checkpoint's training length
};

struct ModelCurve {
  std::string name;           // the run folder's name
  int64_t trained_length = 0; // the checkpoint's data.max_length
  int64_t windows = 0;
  std::vector<double> bins;   // mean loss of each bin of positions
};

// A run's name: the folder holding its checkpoint.
std::string run_name(const std::string& checkpoint) {
  const std::string folder = std::filesystem::absolute(checkpoint).parent_path().filename().string();
  return folder.empty() ? checkpoint : folder;
}

// Averages `values` over `bins` equal ranges of positions.
std::vector<double> bin_means(const std::vector<double>& values, int64_t bins) {
  std::vector<double> out;
  const double width = static_cast<double>(values.size()) / static_cast<double>(bins);
  for (int64_t b = 0; b < bins; ++b) {
    const auto begin = static_cast<size_t>(std::llround(b * width)), end = static_cast<size_t>(std::llround((b + 1) * width));
    double sum = 0.0;
    for (size_t i = begin; i < end; ++i) sum += values[i];
    out.push_back(sum / static_cast<double>(std::max<size_t>(end - begin, 1)));
  }
  return out;
}

double mean_over(const std::vector<double>& values, size_t begin, size_t end) {
  end = std::min(end, values.size());
  if (begin >= end) return std::nan("");
  double sum = 0.0;
  for (size_t i = begin; i < end; ++i) sum += values[i];
  return sum / static_cast<double>(end - begin);
}

void plot(const ExtrapolateArgs& a, const std::vector<ModelCurve>& curves) {
  const double width = static_cast<double>(a.length - 1) / static_cast<double>(a.bins);
  std::string script = fmt::format(
      "set termoption noenhanced\nset title 'next-token loss by position ({} split, {} tokens)'\n"
      "set xlabel 'position'\nset ylabel 'NLL (nats)'\nset grid\nset key top left\n",
      a.split, a.length);
  for (const ModelCurve& c : curves)
    script += fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dashtype 2 lc rgb 'gray'\n", c.trained_length);
  script += "plot ";
  std::string data;
  for (size_t m = 0; m < curves.size(); ++m) {
    script += fmt::format("{}'-' using 1:2 with linespoints pt 7 ps 0.5 lw 2 title {}", m ? ", " : "",
                          gnuplot_quote(curves[m].name));
    for (size_t b = 0; b < curves[m].bins.size(); ++b)
      data += fmt::format("{} {}\n", (static_cast<double>(b) + 0.5) * width, curves[m].bins[b]);
    data += "e\n";
  }
  plot_png(a.png, script + "\n" + data, 900, 560);
}

// --rope-scaling: every rotary encoding of the model scaled for evaluation at --length; returns
// the factor used. A model without rotary is refused (the option would change nothing).
double scale_rotary(nn::Model& model, RotaryScaling scaling, const ExtrapolateArgs& a, const std::string& checkpoint,
                    int64_t trained) {
  if (scaling == RotaryScaling::none) return 1.0;
  const double factor = a.factor > 0 ? a.factor : std::max(1.0, static_cast<double>(a.length) / trained);
  int64_t scaled = 0;
  for (const auto& module : model->modules())
    if (auto* rotary = module->as<RotaryEncodingImpl>()) {
      rotary->set_scaling(scaling, factor, trained);
      ++scaled;
    }
  if (scaled == 0)
    throw std::invalid_argument(fmt::format("--rope-scaling {}: {} has no rotary encoding (model.positional.kind is {})",
                                            a.rope_scaling, checkpoint,
                                            choice_name(model->options.transformer().positional().kind(),
                                                        nn::kPositionalKinds)));
  return factor;
}

void run(const ExtrapolateArgs& a) {
  const RotaryScaling scaling = parse_choice("--rope-scaling", a.rope_scaling, kRotaryScalings);
  std::vector<ModelCurve> curves;
  nlohmann::json lines = nlohmann::json::array();
  for (const std::string& checkpoint : a.checkpoints) {
    inference::SavedModel saved = inference::load_saved_model(checkpoint);
    const int64_t trained_length = saved.header.config.data.max_length;
    const double factor = scale_rotary(saved.model, scaling, a, checkpoint, trained_length);
    const data::Dataset dataset = train::load_split_for(saved.header, a.split, a.data_dir);
    // the thread rule of training's steps (spe::threads_for_step) on its forward passes
    choose_step_threads(step_flops(nn::parameter_count(*saved.model), static_cast<double>(a.batch_size * a.length), false),
                        nn::softmax_attention(saved.model->options));
    const inference::PositionLosses losses =
        inference::position_losses(*saved.model, dataset, a.length, a.batch_size, static_cast<uint64_t>(a.seed));
    std::string name = run_name(checkpoint);
    if (a.rope_scaling != "none") name += fmt::format(" ({} x{:.3g})", a.rope_scaling, factor);
    ModelCurve c{name, trained_length, losses.windows, bin_means(losses.loss, std::min<int64_t>(a.bins, a.length - 1))};
    const auto trained = static_cast<size_t>(c.trained_length);
    const double inside = mean_over(losses.loss, 0, trained), beyond = mean_over(losses.loss, trained, losses.loss.size());
    lines.push_back({{"model", c.name}, {"checkpoint", checkpoint}, {"rope_scaling", a.rope_scaling},
                     {"factor", factor}, {"trained_length", c.trained_length},
                     {"length", a.length}, {"windows", c.windows}, {"nll_within_trained_length", inside},
                     {"nll_beyond_trained_length", beyond}, {"nll_bins", c.bins}});
    std::cout << lines.back().dump() << "\n";
    curves.push_back(std::move(c));
  }
  std::cout << fmt::format("\n| model | trained length | windows of {} | NLL within | NLL beyond |\n|---|---|---|---|---|\n",
                           a.length);
  for (const auto& line : lines)
    std::cout << fmt::format("| {} | {} | {} | {:.4f} | {:.4f} |\n", line["model"].get<std::string>(),
                             line["trained_length"].get<int64_t>(), line["windows"].get<int64_t>(),
                             line["nll_within_trained_length"].get<double>(),
                             line["nll_beyond_trained_length"].get<double>());
  if (!a.json.empty()) {
    std::string text;
    for (const auto& line : lines) text += line.dump() + "\n";
    write_file_atomically(a.json, text);
  }
  if (!a.png.empty()) {
    plot(a, curves);
    std::cout << "plot: " << a.png << "\n";
  }
}

}  // namespace

void add_extrapolate_command(CLI::App& app) {
  auto args = std::make_shared<ExtrapolateArgs>();
  CLI::App* sub = app.add_subcommand(
      "extrapolate", "language models on sequences longer than their training length: next-token loss by position");
  sub->add_option("--checkpoint", args->checkpoints, "a run's checkpoint.pt (repeat to compare models)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--length", args->length, "tokens per evaluated window (e.g. 4x the training length)")
      ->required()
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
  sub->add_option("--data", args->data_dir, "data folder (default: the one each run was trained on)");
  sub->add_option("--split", args->split, "split to evaluate")->capture_default_str();
  sub->add_option("--bins", args->bins, "bins of positions in the table and plot")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--batch-size", args->batch_size, "windows per forward pass")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--seed", args->seed, "seed of the SPE draws")->capture_default_str();
  sub->add_option("--rope-scaling", args->rope_scaling,
                  "rotary models: linear (position interpolation), ntk (NTK-aware) or yarn, for --length")
      ->capture_default_str();
  sub->add_option("--factor", args->factor, "the rope scaling factor (default: --length over the training length)")
      ->check(number_in(1.0, 1e6));
  sub->add_option("--png", args->png, "plot of the loss against position");
  sub->add_option("--json", args->json, "the results as JSON lines");
  sub->callback([args] { run(*args); });
}

}  // namespace spe::cli
