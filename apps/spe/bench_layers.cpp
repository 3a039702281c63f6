// `spe bench decode` and `spe bench layer`: token-by-token decoding cost over positions, and
// self-attention layers (linear attention with each relative position, softmax + Shaw RPE) over lengths.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "gnuplot.h"
#include "measure.h"
#include "spe/nn/transformer.h"

namespace spe::cli {
namespace {

struct LayerArgs {
  std::vector<int64_t> lengths{256, 512, 1024, 2048, 4096, 8192, 16384};
  std::vector<std::string> layers{"linear+sineSPE", "softmax+shaw"};
  int64_t positions = 65536, window = 1024;
  int64_t batch = 1, heads = 8, dim = 64, realizations = 64, sines = 5, clip = 64;
  int64_t softmax_max_length = 8192;
  bool causal = true;
  int repeats = 3;
  std::string png;
};

// The self-attention layers compared (nn::SelfAttention, as in the models), by name, and what
// each one is. Every linear one uses elu+1 features.
const std::vector<std::pair<std::string, std::string>> kLayers{
    {"linear+sineSPE", "linear attention + gated sineSPE (the layer's own code, filter before the map)"},
    {"linear", "linear attention, no position"},
    {"linear+decay", "linear attention + exponential decay (fixed per-head decays)"},
    {"linear+toeplitz", "linear attention + Toeplitz bias clipped at --clip"},
    {"softmax+shaw", "softmax attention + Shaw RPE clipped at --clip"}};

nn::SelfAttention make_layer(const LayerArgs& a, const std::string& name) {
  nn::TransformerOptions o(2);
  o.dim(a.heads * a.dim).heads(a.heads).causal(a.causal).dropout(0.0);
  if (name == "softmax+shaw") {
    o.attention().kind(nn::AttentionKind::softmax);
    o.positional().kind(nn::PositionalKind::shaw).clip(a.clip);
    return nn::SelfAttention(o);
  }
  o.attention().kind(nn::AttentionKind::linear).feature_map(FeatureMapKind::elu);
  if (name == "linear+sineSPE")
    o.positional().kind(nn::PositionalKind::sine_spe).realizations(a.realizations).sines(a.sines).shared_code(false);
  else if (name == "linear+decay")
    o.positional().kind(nn::PositionalKind::decay);
  else if (name == "linear+toeplitz")
    o.positional().kind(nn::PositionalKind::toeplitz).clip(a.clip);
  return nn::SelfAttention(o);
}

// Decoding with the linear + sineSPE layer's one-position form (SelfAttention::step): for each new
// token the projections, the fused filter at its position (the code is never materialised), one
// update of the recurrent state and the output projection.
void bench_decode(const LayerArgs& a) {
  at::NoGradGuard no_grad;
  const int64_t B = a.batch, H = a.heads, D = a.dim, R = a.realizations;
  nn::SelfAttention layer = make_layer(a, "linear+sineSPE");
  layer->eval();
  nn::AttentionState state = layer->start_decoding();
  const at::Tensor x = at::randn({B, 1, H * D});
  std::vector<std::pair<int64_t, double>> per_window;  // (first position, median seconds per token)
  std::vector<double> times;
  for (int64_t t = 0; t < a.positions; ++t) {
    const double start = now_s();
    layer->step(x, state, {});
    times.push_back(now_s() - start);
    if (static_cast<int64_t>(times.size()) == a.window || t + 1 == a.positions) {
      std::sort(times.begin(), times.end());
      per_window.emplace_back(t + 1 - static_cast<int64_t>(times.size()), times[times.size() / 2]);
      times.clear();
    }
  }
  std::string data;
  for (const auto& [position, seconds] : per_window) {
    std::cout << fmt::format(
        "{{\"scenario\": \"decode_step\", \"B\": {}, \"H\": {}, \"D\": {}, \"R\": {}, \"K\": {}, \"first_position\": {}, "
        "\"window\": {}, \"median_us_per_token\": {:.4g}, \"state_floats\": {}, \"threads\": {}}}\n",
        B, H, D, R, a.sines, position, a.window, seconds * 1e6, state.linear.kv.numel() + state.linear.normalizer.numel(),
        at::get_num_threads());
    data += fmt::format("{} {:.6g}\n", position + 1, seconds * 1e6);
  }
  if (!a.png.empty()) {
    plot_png(a.png,
             fmt::format("set title {}\nset xlabel 'position'\nset ylabel 'microseconds per token (median of {} tokens)'\n"
                         "set yrange [0:*]\nset grid\n"
                         "plot '-' using 1:2 with linespoints pt 7 lw 2 title 'attention layer: sineSPE + gate + elu + recurrent step'\n{}e\n",
                         gnuplot_quote(fmt::format("decode step, B={} H={} D={} R={}: constant cost per token", B, H, D, R)),
                         a.window, data),
             1000, 600);
    std::cerr << "wrote " << a.png << "\n";
  }
}

// The first length at which `linear` (a linear layer's name) is faster than softmax + Shaw, or -1.
template <typename Row>
int64_t crossover_length(const std::vector<Row>& rows, const std::string& linear) {
  for (const Row& softmax : rows) {
    if (softmax.name != "softmax+shaw") continue;
    for (const Row& other : rows)
      if (other.n == softmax.n && other.name == linear && other.seconds < softmax.seconds) return softmax.n;
  }
  return -1;
}

// Each chosen self-attention layer on x (B, N, E = H D), forward + backward, over the lengths.
void bench_layer(const LayerArgs& a) {
  std::vector<nn::SelfAttention> layers;
  for (const std::string& name : a.layers) layers.push_back(make_layer(a, name));
  const AttentionMask mask = a.causal ? AttentionMask::causal_only() : AttentionMask::none();
  struct Row {
    int64_t n;
    std::string name;
    double seconds, memory;
  };
  std::vector<Row> rows;
  for (bool measure_memory : {false, true}) {  // timings first: measuring memory fixes the allocator
    for (int64_t n : a.lengths) {
      at::Tensor x = at::randn({a.batch, n, a.heads * a.dim});
      for (size_t i = 0; i < layers.size(); ++i) {
        const std::string& name = a.layers[i];
        if (name == "softmax+shaw" && n > a.softmax_max_length) continue;
        auto step = [&] { layers[i]->forward(x, mask, {}).sum().backward(); };
        if (!measure_memory) {
          rows.push_back({n, name, time_median(step, a.repeats).median_s, 0.0});
        } else {
          for (Row& r : rows)
            if (r.n == n && r.name == name) r.memory = peak_memory_mib(step);
        }
      }
    }
  }
  for (const Row& r : rows)
    std::cout << fmt::format(
        "{{\"scenario\": \"attention_layer\", \"impl\": \"{}\", \"causal\": {}, \"B\": {}, \"N\": {}, \"H\": {}, "
        "\"D\": {}, \"R\": {}, \"K\": {}, \"clip\": {}, \"forward_backward_s\": {:.6g}, \"peak_above_inputs_mib\": {:.1f}, "
        "\"threads\": {}}}\n",
        r.name, a.causal, a.batch, r.n, a.heads, a.dim, a.realizations, a.sines, a.clip, r.seconds, r.memory,
        at::get_num_threads());
  for (const std::string& name : a.layers)
    if (name != "softmax+shaw")
      std::cout << fmt::format("{{\"scenario\": \"attention_layer\", \"impl\": \"{}\", \"crossover_length\": {}}}\n",
                               name, crossover_length(rows, name));
  if (!a.png.empty()) {
    std::string script = fmt::format(
        "set multiplot layout 1,2 title {}\nset logscale xy 2\nset xlabel 'sequence length N'\nset grid\nset key top left\n",
        gnuplot_quote(fmt::format("one {} attention layer, forward + backward, B={} H={} D={} R={} clip={}",
                                  a.causal ? "causal" : "bidirectional", a.batch, a.heads, a.dim, a.realizations,
                                  a.clip)));
    for (const char* what : {"seconds", "MiB"}) {
      const bool time = std::string(what) == "seconds";
      script += fmt::format("set ylabel '{}'\nset title '{}'\nplot ", what, time ? "time" : "peak memory above inputs");
      for (size_t i = 0; i < a.layers.size(); ++i)
        script += fmt::format("{}'-' using 1:2 with linespoints pt {} lw 2 title {}", i ? ", " : "", 5 + 2 * i,
                              gnuplot_quote(a.layers[i]));
      script += "\n";
      for (const std::string& name : a.layers) {
        for (const Row& r : rows)
          if (r.name == name) script += fmt::format("{} {:.6g}\n", r.n, time ? r.seconds : std::max(r.memory, 0.1));
        script += "e\n";
      }
    }
    script += "unset multiplot\n";
    plot_png(a.png, script, 1300, 550);
    std::cerr << "wrote " << a.png << "\n";
  }
}

}  // namespace

void add_bench_layer_scenarios(CLI::App& bench) {
  auto a = std::make_shared<LayerArgs>();
  auto* decode = bench.add_subcommand("decode", "per-token cost of SPE decoding over positions (recurrent state)");
  decode->add_option("--positions", a->positions, "tokens to decode")->check(CLI::Range(int64_t{1}, int64_t{1} << 24))->capture_default_str();
  decode->add_option("--window", a->window, "tokens per reported median")->check(positive_integer())->capture_default_str();
  auto* layer = bench.add_subcommand("layer", "self-attention layers over lengths: linear + each relative position vs softmax + Shaw RPE");
  std::string layer_help = "layers to time, of:";
  std::vector<std::string> layer_names;
  for (const auto& [name, what] : kLayers) {
    layer_help += fmt::format("\n  {}: {}", name, what);
    layer_names.push_back(name);
  }
  layer->add_option("--layers", a->layers, layer_help)->check(CLI::IsMember(layer_names))->capture_default_str();
  layer->add_flag("!--bidirectional", a->causal, "non-causal layers (an encoder's) instead of causal ones");
  layer->add_option("--length", a->lengths, "sequence lengths N")->check(positive_integer())->capture_default_str();
  layer->add_option("--clip", a->clip, "clipping distance of Shaw RPE and of the Toeplitz bias")->check(positive_integer())->capture_default_str();
  layer->add_option("--softmax-max-length", a->softmax_max_length, "skip softmax above this N (quadratic memory)")->capture_default_str();
  layer->add_option("--repeats", a->repeats, "timed repeats (median reported)")->check(positive_integer())->capture_default_str();
  for (CLI::App* sub : {decode, layer}) {
    sub->add_option("--batch", a->batch, "B")->check(positive_integer())->capture_default_str();
    sub->add_option("--heads", a->heads, "H")->check(positive_integer())->capture_default_str();
    sub->add_option("--dim", a->dim, "D")->check(positive_integer())->capture_default_str();
    sub->add_option("--realizations", a->realizations, "R")->check(positive_integer())->capture_default_str();
    sub->add_option("--sines", a->sines, "K")->check(positive_integer())->capture_default_str();
    sub->add_option("--png", a->png, "also plot the curves (gnuplot)");
  }
  decode->callback([a] { bench_decode(*a); });
  layer->callback([a] { bench_layer(*a); });
}

}  // namespace spe::cli
