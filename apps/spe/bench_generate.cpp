// `spe bench generate`: generating with a whole language model, token by token: the recurrent
// decoder (prefix sums per layer, SPE code of each new position on the fly) and its fused step on
// raw buffers (where it covers the model) against recomputing the model over the whole prefix for
// every token, as the authors' code generates.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.h"
#include "gnuplot.h"
#include "measure.h"
#include "spe/nn/decoder.h"
#include "spe/inference/saved_model.h"
#include "spe/util/threads.h"

namespace spe::cli {
namespace {

struct GenerateBenchArgs {
  std::string config = "configs/music/lm.yaml";
  std::vector<std::string> overrides;  // --set key=value on the config
  std::string checkpoint;              // instead of a config: a trained model
  int64_t vocab = 512;     // with a config: the vocabulary of the untrained model
  int64_t positions = 16384, window = 512;
  std::vector<int64_t> prefix_positions{128, 512, 2048, 8192, 16384};
  int repeats = 3;
  std::string png;
};

nn::Model bench_model(const GenerateBenchArgs& a) {
  if (!a.checkpoint.empty()) return inference::load_saved_model(a.checkpoint).model;
  const train::Config config = train::load_config(a.config, a.overrides);
  data::DatasetInfo info;
  info.vocab_size = a.vocab;
  nn::Model model = inference::build_model(config, info);
  model->eval();
  return model;
}

std::string describe(const nn::Model& model) {
  const auto& t = model->options.transformer();
  return fmt::format("{} layers, dim {}, {} + {}", t.layers(), t.dim(), choice_name(t.attention().kind(), nn::kAttentionKinds),
                     choice_name(t.positional().kind(), nn::kPositionalKinds));
}

// Per-token times of one decoder with a constant cost per token over `positions` tokens: the
// median of each window, as (last position of the window's middle, seconds).
using WindowMedians = std::vector<std::pair<int64_t, double>>;

// The recurrent decoder and, where it covers the model, the fused one, stepped in alternation (so
// that both see the same load on the machine), each on the tokens it chose itself.
std::vector<std::pair<nn::DecoderKind, WindowMedians>> stepwise_times(const nn::Model& model, const GenerateBenchArgs& a) {
  choose_decoding_threads(static_cast<double>(nn::parameter_bytes(*model)));  // as spe generate
  std::vector<nn::DecoderKind> kinds{nn::DecoderKind::recurrent};
  if (nn::fastest_decoder(model) == nn::DecoderKind::fused) kinds.push_back(nn::DecoderKind::fused);
  std::vector<std::unique_ptr<nn::Decoder>> decoders;
  std::vector<at::Tensor> tokens;
  for (nn::DecoderKind kind : kinds) {
    decoders.push_back(nn::make_decoder(kind, model, 1, make_generator(1)));
    tokens.push_back(at::ones({1}, at::kLong));
  }
  std::vector<std::pair<nn::DecoderKind, WindowMedians>> medians;
  for (nn::DecoderKind kind : kinds) medians.push_back({kind, {}});
  std::vector<std::vector<double>> windows(kinds.size());
  for (int64_t t = 0; t < a.positions; ++t)
    for (size_t i = 0; i < kinds.size(); ++i) {
      const double start = now_s();
      tokens[i] = decoders[i]->step(tokens[i]).argmax(-1);
      std::vector<double>& window = windows[i];
      window.push_back(now_s() - start);
      if (static_cast<int64_t>(window.size()) == a.window || t + 1 == a.positions) {
        std::sort(window.begin(), window.end());
        medians[i].second.emplace_back(t + 1 - static_cast<int64_t>(window.size() / 2), window[window.size() / 2]);
        window.clear();
      }
    }
  return medians;
}

// The median of the windows that start at or before position t (the last window otherwise).
double time_at(const WindowMedians& medians, int64_t t) {
  double at = medians.back().second;
  for (const auto& [position, seconds] : medians)
    if (position <= t) at = seconds;
  return at;
}

// The time of the prefix decoder's step at position t: the model over t + 1 tokens (median).
double prefix_time(nn::Model model, int64_t t, int repeats) {
  choose_step_threads(step_flops(nn::parameter_count(*model), static_cast<double>(t + 1), false),
                      nn::softmax_attention(model->options));  // as spe generate
  at::NoGradGuard no_grad;
  const at::Tensor prefix = at::ones({1, t + 1}, at::kLong);
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const double start = now_s();
    model->forward(prefix, {}, {}, {}, make_generator(1)).select(1, -1).argmax(-1);
    times.push_back(now_s() - start);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The bound a token's step cannot beat: one product of a vector by every weight matrix of the
// model (its 2-D parameters; the token embedding only where it is also the output layer, a step
// reading one row of it otherwise), timed as a single matrix of as many weights (rows of the
// model's width), median of repeats.
double gemv_bound_s(const nn::Model& model, int repeats) {
  const bool tied = !model->output_layer;
  int64_t weights = 0;
  for (const auto& p : model->named_parameters())
    if (p.value().dim() == 2 && (tied || p.key() != "transformer.embedding.weight")) weights += p.value().numel();
  const int64_t width = model->options.transformer().dim();
  const at::Tensor matrix = at::randn({std::max<int64_t>(1, weights / width), width});
  const at::Tensor vector = at::randn({width});
  return time_median([&] { at::mv(matrix, vector); }, std::max(repeats, 20)).median_s;
}

void bench_generate(const GenerateBenchArgs& a) {
  const nn::Model model = bench_model(a);
  const std::string what = describe(model);
  const auto stepwise = stepwise_times(model, a);
  std::vector<std::string> curves;  // gnuplot's data, one curve per decoder
  std::vector<double> totals;
  for (const auto& [kind, medians] : stepwise) {
    std::string data;
    double total = 0.0;
    for (const auto& [position, seconds] : medians) {
      std::cout << fmt::format("{{\"scenario\": \"generate\", \"decoder\": \"{}\", \"model\": \"{}\", "
                               "\"position\": {}, \"median_ms_per_token\": {:.4g}, \"threads\": {}}}\n",
                               choice_name(kind, nn::kDecoderKinds), what, position, seconds * 1e3, at::get_num_threads());
      data += fmt::format("{} {:.6g}\n", position, seconds * 1e3);
      total += seconds * static_cast<double>(a.window);
    }
    curves.push_back(data);
    totals.push_back(total);
  }
  std::string prefix_data;
  for (int64_t t : a.prefix_positions) {
    if (t >= a.positions) continue;
    const double seconds = prefix_time(model, t, a.repeats);
    std::string speedups;
    for (const auto& [kind, medians] : stepwise)
      speedups += fmt::format(", \"{}_speedup\": {:.1f}", choice_name(kind, nn::kDecoderKinds),
                              seconds / time_at(medians, t));
    std::cout << fmt::format("{{\"scenario\": \"generate\", \"decoder\": \"prefix\", \"model\": \"{}\", \"position\": {}, "
                             "\"median_ms_per_token\": {:.4g}{}, \"threads\": {}}}\n",
                             what, t, seconds * 1e3, speedups, at::get_num_threads());
    prefix_data += fmt::format("{} {:.6g}\n", t, seconds * 1e3);
  }
  const double bound = gemv_bound_s(model, a.repeats);
  for (size_t i = 0; i < stepwise.size(); ++i) {
    const WindowMedians& medians = stepwise[i].second;
    std::cout << fmt::format("{{\"scenario\": \"generate\", \"decoder\": \"{}\", \"tokens\": {}, \"tokens_per_s\": {:.1f}, "
                             "\"gemv_bound_ms_per_token\": {:.4g}, \"median_over_bound\": {:.3g}}}\n",
                             choice_name(stepwise[i].first, nn::kDecoderKinds), a.positions,
                             static_cast<double>(a.positions) / std::max(totals[i], 1e-9), bound * 1e3,
                             medians[medians.size() / 2].second / std::max(bound, 1e-12));
  }
  if (!a.png.empty()) {
    std::string plots, data;
    for (size_t i = 0; i < stepwise.size(); ++i) {
      plots += fmt::format("'-' using 1:2 with linespoints pt 7 lw 2 title '{} step (median per {} tokens)', ",
                           choice_name(stepwise[i].first, nn::kDecoderKinds), a.window);
      data += curves[i] + "e\n";
    }
    plot_png(a.png,
             fmt::format("set termoption noenhanced\nset title {}\nset xlabel 'position'\nset ylabel 'ms per token'\n"
                         "set logscale xy 2\nset grid\nset key top left\n"
                         "plot {}'-' using 1:2 with linespoints pt 5 lw 2 title 'recompute the prefix'\n{}{}e\n",
                         gnuplot_quote("generation, one sequence: " + what), plots, data, prefix_data),
             1000, 600);
    std::cerr << "wrote " << a.png << "\n";
  }
}

}  // namespace

void add_bench_generate_scenario(CLI::App& bench) {
  auto a = std::make_shared<GenerateBenchArgs>();
  auto* sub = bench.add_subcommand("generate", "per-token generation time of a language model: the recurrent and fused steps vs recomputing the prefix");
  sub->add_option("--config", a->config, "model of this configuration, untrained")->capture_default_str();
  auto* set = sub->add_option("--set", a->overrides, "override one key of the config, e.g. --set model.dim=512 (repeatable)")
                  ->take_all();
  sub->add_option("--checkpoint", a->checkpoint, "or a trained model")->check(CLI::ExistingFile)->excludes(set);
  sub->add_option("--vocab", a->vocab, "vocabulary of the untrained model")->check(positive_integer())->capture_default_str();
  sub->add_option("--positions", a->positions, "tokens generated by each decoder with a constant cost per token")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22))
      ->capture_default_str();
  sub->add_option("--window", a->window, "tokens per reported median")->check(positive_integer())->capture_default_str();
  sub->add_option("--prefix-positions", a->prefix_positions, "positions at which a prefix step is timed, comma-separated")
      ->delimiter(',')
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--repeats", a->repeats, "timed prefix steps per position (median)")->check(positive_integer())->capture_default_str();
  sub->add_option("--png", a->png, "plot both curves (gnuplot)");
  sub->callback([a] { bench_generate(*a); });
}

}  // namespace spe::cli
