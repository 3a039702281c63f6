// `spe bench decode` and `spe bench layer`: token-by-token decoding cost over positions, and one
// attention layer, linear attention + sineSPE against softmax attention + Shaw RPE, over lengths.
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
#include "spe/attention/feature_maps.h"
#include "spe/attention/linear.h"
#include "spe/attention/softmax.h"
#include "spe/encoding/relative.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/ops/sine_spe_filter.h"

namespace spe::cli {
namespace {

struct LayerArgs {
  std::vector<int64_t> lengths{256, 512, 1024, 2048, 4096, 8192, 16384};
  int64_t positions = 65536, window = 1024;
  int64_t batch = 1, heads = 8, dim = 64, realizations = 64, sines = 5, clip = 64;
  int64_t softmax_max_length = 8192;
  int repeats = 3;
  std::string png;
};

// Decoding with sineSPE + elu features + the recurrent causal linear attention state: for each
// new token, the filter at its position (O(1): the code of one position) and one state update.
void bench_decode(const LayerArgs& a) {
  at::NoGradGuard no_grad;
  const int64_t B = a.batch, H = a.heads, D = a.dim, R = a.realizations;
  SineSPE spe(SineSPEOptions(H, D).sines(a.sines).realizations(R));
  SPEFilter filter(SPEFilterOptions(H, D));
  FeatureMap phi(FeatureMapOptions(FeatureMapKind::elu, R));
  // one code per sequence, kept as factors: the token at position t reads its row of it
  SPECode code = filter->apply_gate(spe->forward(a.positions));
  const SineCodeFactors& f = *code.sine;
  const at::Tensor no_offsets = at::zeros_like(f.offsets);
  auto state = LinearAttentionState::zeros(B, H, R, D, at::kFloat);
  at::Tensor q = at::randn({B, 1, H, D}), k = at::randn({B, 1, H, D}), v = at::randn({B, H, D});
  std::vector<std::pair<int64_t, double>> per_window;  // (first position, median seconds per token)
  std::vector<double> times;
  for (int64_t t = 0; t < a.positions; ++t) {
    const double start = now_s();
    at::Tensor qhat = ops::sine_spe_filter(q, f.frequencies, f.offsets, f.weights, f.gate_scale, f.gate_shift, t);
    at::Tensor khat = ops::sine_spe_filter(k, f.frequencies, no_offsets, f.weights, f.gate_scale, f.gate_shift, t);
    causal_linear_attention_step(phi->forward(qhat.select(1, 0), FeatureRole::query),
                                 phi->forward(khat.select(1, 0), FeatureRole::key), v, state);
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
        B, H, D, R, a.sines, position, a.window, seconds * 1e6, state.kv.numel() + state.normalizer.numel(),
        at::get_num_threads());
    data += fmt::format("{} {:.6g}\n", position + 1, seconds * 1e6);
  }
  if (!a.png.empty()) {
    plot_png(a.png,
             fmt::format("set title {}\nset xlabel 'position'\nset ylabel 'microseconds per token (median of {} tokens)'\n"
                         "set yrange [0:*]\nset grid\n"
                         "plot '-' using 1:2 with linespoints pt 7 lw 2 title 'sineSPE + gate + elu + recurrent step'\n{}e\n",
                         gnuplot_quote(fmt::format("decode step, B={} H={} D={} R={}: constant cost per token", B, H, D, R)),
                         a.window, data),
             1000, 600);
    std::cerr << "wrote " << a.png << "\n";
  }
}

// One causal self-attention layer on x (B, N, E = H D), forward + backward:
//   "linear+sineSPE": q, k, v projections -> gated sineSPE filter -> elu+1 -> causal linear attention
//   "softmax+shaw":   q, k, v projections -> causal softmax attention with Shaw RPE (clip k)
struct Layer {
  SineSPE spe;
  SPEFilter filter;
  FeatureMap phi;
  RelativePosition shaw;
  at::Tensor wq, wk, wv;  // (E, E)
  Layer(const LayerArgs& a)
      : spe(SineSPEOptions(a.heads, a.dim).sines(a.sines).realizations(a.realizations)),
        filter(SPEFilterOptions(a.heads, a.dim)),
        phi(FeatureMapOptions(FeatureMapKind::elu, a.realizations)),
        shaw(RelativePositionOptions(a.dim, a.clip)) {
    const int64_t e = a.heads * a.dim;
    wq = (at::randn({e, e}) / std::sqrt(e)).requires_grad_();
    wk = (at::randn({e, e}) / std::sqrt(e)).requires_grad_();
    wv = (at::randn({e, e}) / std::sqrt(e)).requires_grad_();
  }
  at::Tensor forward(const at::Tensor& x, bool linear, int64_t heads) {
    auto split = [&](const at::Tensor& w) { return at::matmul(x, w).unflatten(2, {heads, -1}); };
    at::Tensor q = split(wq), k = split(wk), v = split(wv);
    if (!linear) return softmax_attention(q, k, v, AttentionMask::causal_only(), shaw.get());
    auto [qhat, khat] = filter->forward(q, k, spe->forward(x.size(1)));
    return causal_linear_attention(phi->forward(qhat, FeatureRole::query), phi->forward(khat, FeatureRole::key), v);
  }
};

void bench_layer(const LayerArgs& a) {
  Layer layer(a);
  struct Row {
    int64_t n;
    std::string name;
    double seconds, memory;
  };
  std::vector<Row> rows;
  for (bool measure_memory : {false, true}) {  // timings first: measuring memory fixes the allocator
    for (int64_t n : a.lengths) {
      at::Tensor x = at::randn({a.batch, n, a.heads * a.dim});
      for (bool linear : {true, false}) {
        if (!linear && n > a.softmax_max_length) continue;
        auto step = [&] { layer.forward(x, linear, a.heads).sum().backward(); };
        const std::string name = linear ? "linear+sineSPE" : "softmax+shaw";
        if (!measure_memory) {
          rows.push_back({n, name, time_median(step, a.repeats).median_s, 0.0});
        } else {
          for (Row& r : rows)
            if (r.n == n && r.name == name) r.memory = peak_memory_mib(step);
        }
      }
    }
  }
  int64_t crossover = -1;
  for (const Row& r : rows) {
    std::cout << fmt::format(
        "{{\"scenario\": \"attention_layer\", \"impl\": \"{}\", \"B\": {}, \"N\": {}, \"H\": {}, \"D\": {}, \"R\": {}, "
        "\"K\": {}, \"clip\": {}, \"forward_backward_s\": {:.6g}, \"peak_above_inputs_mib\": {:.1f}, \"threads\": {}}}\n",
        r.name, a.batch, r.n, a.heads, a.dim, a.realizations, a.sines, a.clip, r.seconds, r.memory,
        at::get_num_threads());
    if (r.name != "softmax+shaw" || crossover >= 0) continue;
    for (const Row& other : rows)
      if (other.n == r.n && other.name == "linear+sineSPE" && other.seconds < r.seconds) crossover = r.n;
  }
  std::cout << fmt::format("{{\"scenario\": \"attention_layer\", \"crossover_length\": {}}}\n", crossover);
  if (!a.png.empty()) {
    std::string script = fmt::format(
        "set multiplot layout 1,2 title {}\nset logscale xy 2\nset xlabel 'sequence length N'\nset grid\nset key top left\n",
        gnuplot_quote(fmt::format("one causal attention layer, forward + backward, B={} H={} D={} R={} Shaw clip={}",
                                  a.batch, a.heads, a.dim, a.realizations, a.clip)));
    for (const char* what : {"seconds", "MiB"}) {
      const bool time = std::string(what) == "seconds";
      script += fmt::format("set ylabel '{}'\nset title '{}'\n", what, time ? "time" : "peak memory above inputs");
      script += "plot '-' using 1:2 with linespoints pt 7 lw 2 title 'linear + sineSPE', "
                "'-' using 1:2 with linespoints pt 5 lw 2 title 'softmax + Shaw RPE'\n";
      for (const char* name : {"linear+sineSPE", "softmax+shaw"}) {
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
  auto* layer = bench.add_subcommand("layer", "one attention layer: linear + sineSPE vs softmax + Shaw RPE");
  layer->add_option("--length", a->lengths, "sequence lengths N")->check(positive_integer())->capture_default_str();
  layer->add_option("--clip", a->clip, "Shaw clipping distance k")->check(positive_integer())->capture_default_str();
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
