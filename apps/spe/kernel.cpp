// `spe kernel`: the positional kernel a relative position induces, what a query at m sees of a key
// at n against the lag m - n: an SPE layer's exact and sampled, or the exact one of decay,
// toeplitz and rotary; from the modules as a model starts with them, or a trained model's layer.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "gnuplot.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/decay.h"
#include "spe/encoding/rotary.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/encoding/toeplitz.h"
#include "spe/inference/saved_model.h"
#include "spe/util/files.h"

namespace spe::cli {
namespace {

struct KernelArgs {
  std::string pe;
  int64_t heads = 0, dim = 0, length = 0, realizations = 0;
  int64_t sines = 5, kernel_size = 16;
  int64_t clip = ToeplitzBiasOptions(1).clip();
  double base = RotaryEncodingOptions(2).base(), factor = 1.0;
  std::string rope_scaling = "none";
  int64_t original_length = 0;
  bool gated = false, causal = false;
  uint64_t seed = 0;
  std::string dtype = "float64";
  std::string json_path, png_path;
  std::string checkpoint;  // a trained model: its layer's modules and sizes instead of fresh ones
  int64_t layer = 0;
};

// sine and conv: a kernel per head and feature, expected and sampled; the others: exact, per head.
bool is_spe(const std::string& pe) { return pe == "sine" || pe == "conv"; }

// What the JSON's "definition" says the kernel is.
std::string definition(const KernelArgs& a) {
  std::string text;
  if (is_spe(a.pe))
    text = "expected: E[sum_r Qbar'[m] Kbar'[m - lag]] (after the gate when gated); empirical: one draw, averaged "
           "over the position pairs with each lag";
  if (a.pe == "decay") text = "g_h^|m - n|, g_h = sigmoid(logits_h): the weight of the pair (m, n)";
  if (a.pe == "toeplitz")
    text = "exp(b_h(clamp(m - n, -clip, clip))), b_h(lag) = bias[h][lag + clip]: the factor on the weight of the "
           "pair (m, n)";
  if (a.pe == "rotary")
    text = "(R(m) u) . (R(n) u) for a unit u with mass 2 / D in every rotated pair, which is also its mean over u "
           "uniform on the unit sphere: the mean over pairs i of cos(theta_i (m - n)), times (0.1 ln s + 1)^2 "
           "under yarn; the same for every head";
  return a.causal ? text + "; 0 for keys after the query (m - n < 0)" : text;
}

// "sineSPE (gated)", "rotary (base 10000, yarn x4, causal)": the kind as the output names it.
std::string label(const KernelArgs& a) {
  std::vector<std::string> notes;
  if (!a.checkpoint.empty()) notes.push_back(fmt::format("trained, layer {}", a.layer));
  if (a.gated) notes.emplace_back("gated");
  if (a.pe == "toeplitz") notes.push_back(fmt::format("clip {}", a.clip));
  if (a.pe == "rotary") notes.push_back(fmt::format("base {:g}", a.base));
  if (a.pe == "rotary" && a.rope_scaling != "none") notes.push_back(fmt::format("{} x{:g}", a.rope_scaling, a.factor));
  if (a.causal) notes.emplace_back("causal");
  std::string name = is_spe(a.pe) ? a.pe + "SPE" : a.pe;
  for (size_t i = 0; i < notes.size(); ++i) name += (i ? ", " : " (") + notes[i];
  return notes.empty() ? name : name + ")";
}

// "H=2 D=8 L=256 R=64", each size the kind has.
std::string sizes(const KernelArgs& a) {
  std::string out = fmt::format("H={}", a.heads);
  if (is_spe(a.pe) || a.pe == "rotary") out += fmt::format(" D={}", a.dim);
  out += fmt::format(" L={}", a.length);
  return is_spe(a.pe) ? out + fmt::format(" R={}", a.realizations) : out;
}

// Appends a tensor as nested JSON lists with 17 significant digits (exact round trip of doubles).
void append_json(std::string& out, const at::Tensor& t) {
  if (t.dim() == 0) {
    const double value = t.item<double>();
    TORCH_CHECK(std::isfinite(value), "spe kernel: non-finite value ", value, " in the output");
    fmt::format_to(std::back_inserter(out), "{:.17g}", value);
    return;
  }
  out += '[';
  for (int64_t i = 0; i < t.size(0); ++i) {
    if (i > 0) out += ", ";
    append_json(out, t.select(0, i));
  }
  out += ']';
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

struct KernelReport {
  std::vector<std::pair<std::string, at::Tensor>> params;  // parameters and buffers, as stored
  at::Tensor lags;         // (2L - 1,)
  at::Tensor expected;     // (H, D, 2L - 1) for SPE; (H, 2L - 1), the exact kernel, for the others
  at::Tensor empirical;    // (H, D, 2L - 1) for SPE; undefined for the exact kinds
  at::Tensor frequencies;  // rotary: theta_i after the scaling, (D / 2,); else undefined
};

void keep_state(KernelReport& report, const torch::nn::Module& module) {
  for (const auto& p : module.named_parameters()) report.params.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) report.params.emplace_back(b.key(), b.value());
}

// The modules whose kernel is shown (those of --pe; the others null).
struct PositionalModules {
  SineSPE sine{nullptr};
  ConvSPE conv{nullptr};
  SPEFilter filter{nullptr};
  Decay decay{nullptr};
  ToeplitzBias toeplitz{nullptr};
};

// Fresh modules as a model starts with them, their parameters drawn from --seed (SPE).
PositionalModules fresh_modules(const KernelArgs& a) {
  at::manual_seed(a.seed);  // parameters are drawn from the default generator
  PositionalModules m;
  if (a.pe == "sine") m.sine = SineSPE(SineSPEOptions(a.heads, a.dim).sines(a.sines).realizations(a.realizations));
  if (a.pe == "conv")
    m.conv = ConvSPE(ConvSPEOptions(a.heads, a.dim).kernel_size(a.kernel_size).realizations(a.realizations));
  if (is_spe(a.pe)) m.filter = SPEFilter(SPEFilterOptions(a.heads, a.dim).gated(a.gated));
  if (a.pe == "decay") m.decay = Decay(DecayOptions(a.heads));
  if (a.pe == "toeplitz") m.toeplitz = ToeplitzBias(ToeplitzBiasOptions(a.heads).clip(a.clip));
  return m;
}

// --checkpoint: the modules of the model's layer --layer (the shared SPE module when the layers
// share one), and the arguments they imply, written into `a`.
PositionalModules trained_modules(KernelArgs& a) {
  inference::SavedModel saved = inference::load_saved_model(a.checkpoint);
  nn::TransformerImpl& transformer = *saved.model->transformer;
  const int64_t layers = static_cast<int64_t>(transformer.blocks->size());
  if (a.layer >= layers)
    throw CLI::ValidationError("--layer", fmt::format("the model has {} layer(s), 0 to {}; got {}", layers, layers - 1,
                                                      a.layer));
  nn::SelfAttentionImpl& layer = *transformer.blocks[a.layer]->as<nn::TransformerBlock>()->attention;
  const nn::PositionalOptions& p = transformer.options.positional();
  PositionalModules m;
  m.sine = layer.sine_spe ? layer.sine_spe : transformer.sine_spe;
  m.conv = layer.conv_spe ? layer.conv_spe : transformer.conv_spe;
  m.filter = layer.spe_filter;
  m.decay = layer.decay;
  m.toeplitz = layer.toeplitz;
  a.heads = transformer.options.heads();
  if (m.sine) {
    a.pe = "sine";
    a.dim = m.sine->options.dim();
    a.sines = m.sine->options.sines();
  } else if (m.conv) {
    if (m.conv->options.ndim() != 1)
      throw std::invalid_argument(fmt::format("'{}': its 2-D convSPE has a kernel over the image grid, not over lags "
                                              "m - n: spe kernel shows 1-D kernels only", a.checkpoint));
    a.pe = "conv";
    a.dim = m.conv->options.dim();
    a.kernel_size = m.conv->options.kernel_size();
  } else if (m.decay) {
    a.pe = "decay";
  } else if (m.toeplitz) {
    a.pe = "toeplitz";
    a.clip = m.toeplitz->options.clip();
  } else {
    throw std::invalid_argument(fmt::format(
        "'{}': its positional kind is {}; spe kernel --checkpoint shows the learned relative ones (sine_spe, "
        "conv_spe, decay, toeplitz); rotary learns nothing: see --pe rotary",
        a.checkpoint, choice_name(p.kind(), nn::kPositionalKinds)));
  }
  if (is_spe(a.pe)) {
    a.realizations = p.realizations();
    a.gated = m.filter->options.gated();
  }
  return m;
}

// An SPE layer and its filter: expected and empirical (one draw from --seed), (H, D, 2L - 1) each.
void spe_kernels(const KernelArgs& a, PositionalModules m, KernelReport& report) {
  auto generator = make_generator(a.seed);
  SPECode code;
  at::Tensor expected;
  if (m.sine) {
    code = m.sine->forward(a.length, a.realizations, generator);
    expected = m.sine->expected_kernel(a.length, a.realizations);
    keep_state(report, *m.sine);
  } else {
    code = m.conv->forward({a.length}, a.realizations, generator);
    expected = m.conv->expected_kernel({a.length}, a.realizations);
    keep_state(report, *m.conv);
  }
  SPEFilter filter = m.filter;
  keep_state(report, *filter);
  auto gate_generator = make_generator(a.seed + 1);
  report.expected = filter->expected_kernel(expected, a.realizations);
  report.empirical = empirical_kernel(filter->apply_gate(code, gate_generator));
}

// (R(m) u) . (R(n) u) for u = sqrt(2 / D) (1, 0, 1, 0, ...), rotated by the module at the
// positions 0 .. L - 1: (2L - 1,). Each pair i contributes (2 / D) cos(theta_i (m - n)), as it does
// on average for u uniform on the unit sphere.
at::Tensor rotary_kernel(const RotaryEncoding& rotary, int64_t length, at::ScalarType dtype) {
  const int64_t dim = rotary->options.dim();
  at::Tensor u = at::zeros({dim}, at::TensorOptions().dtype(dtype));
  u.slice(0, 0, dim, 2).fill_(std::sqrt(2.0 / static_cast<double>(dim)));
  at::Tensor rotated = rotary->rotate(u.view({1, 1, 1, dim}).expand({1, length, 1, dim}), at::arange(length, at::kLong))
                           .view({length, dim});
  at::Tensor from_zero = at::mv(rotated, rotated[0]);  // lag p: query at p, key at 0 (and back): (L,)
  return at::cat({from_zero.slice(0, 1).flip(0), from_zero});  // lags -(L - 1) .. L - 1
}

// decay, toeplitz or rotary as the library's module computes it: (H, 2L - 1).
at::Tensor exact_kernel(const KernelArgs& a, PositionalModules m, at::ScalarType dtype, KernelReport& report) {
  if (m.decay) {
    keep_state(report, *m.decay);
    return m.decay->kernel(a.length);
  }
  if (m.toeplitz) {
    keep_state(report, *m.toeplitz);
    return m.toeplitz->kernel(a.length);
  }
  RotaryEncoding rotary(RotaryEncodingOptions(a.dim)
                            .base(a.base)
                            .scaling(parse_choice("--rope-scaling", a.rope_scaling, kRotaryScalings))
                            .factor(a.factor)
                            .original_length(a.original_length));
  report.frequencies = rotary->frequencies();
  return rotary_kernel(rotary, a.length, dtype).unsqueeze(0).expand({a.heads, -1}).contiguous();
}

// Causal attention: a key after its query (lag m - n < 0) weighs 0. kernel: (..., 2L - 1).
at::Tensor without_future(const at::Tensor& kernel, const at::Tensor& lags) {
  return at::where(lags.ge(0), kernel, at::zeros({}, kernel.options()));
}

KernelReport compute_report(const KernelArgs& a, PositionalModules modules) {
  at::NoGradGuard no_grad;
  const auto dtype = a.dtype == "float64" ? at::kDouble : at::kFloat;
  auto to_dtype = [dtype](auto& holder) {
    if (holder) holder->to(dtype);
  };
  to_dtype(modules.sine);
  to_dtype(modules.conv);
  to_dtype(modules.filter);
  to_dtype(modules.decay);
  to_dtype(modules.toeplitz);
  KernelReport report;
  report.lags = at::arange(-(a.length - 1), a.length, at::kLong);
  if (is_spe(a.pe))
    spe_kernels(a, modules, report);
  else
    report.expected = exact_kernel(a, modules, dtype, report);
  if (a.causal) {
    report.expected = without_future(report.expected, report.lags);
    if (report.empirical.defined()) report.empirical = without_future(report.empirical, report.lags);
  }
  return report;
}

std::string report_json(const KernelArgs& a, const KernelReport& r) {
  std::string out = "{\n";
  auto field = [&out](const char* name, const std::string& value) {
    out += fmt::format("  \"{}\": {},\n", name, value);
  };
  auto number = [](double value) { return fmt::format("{:.17g}", value); };
  field("pe", json_string(a.pe));
  if (!a.checkpoint.empty()) {
    field("checkpoint", json_string(a.checkpoint));
    field("layer", std::to_string(a.layer));
  }
  field("definition", json_string(definition(a)));
  field("heads", std::to_string(a.heads));
  if (is_spe(a.pe) || a.pe == "rotary") field("dim", std::to_string(a.dim));
  field("length", std::to_string(a.length));
  if (is_spe(a.pe)) {
    field("realizations", std::to_string(a.realizations));
    field("gated", a.gated ? "true" : "false");
    field("seed", std::to_string(a.seed));
  }
  field("causal", a.causal ? "true" : "false");
  field("dtype", json_string(a.dtype));
  if (a.pe == "sine") field("sines", std::to_string(a.sines));
  if (a.pe == "conv") field("kernel_size", std::to_string(a.kernel_size));
  if (a.pe == "toeplitz") field("clip", std::to_string(a.clip));
  if (a.pe == "rotary") {
    field("base", number(a.base));
    field("rope_scaling", json_string(a.rope_scaling));
    field("factor", number(a.factor));
    field("original_length", std::to_string(a.original_length));
    std::string theta;
    append_json(theta, r.frequencies);
    field("frequencies", theta);
  }
  field("axes", is_spe(a.pe) ? R"(["head", "feature", "lag"])" : R"(["head", "lag"])");
  out += "  \"params\": {";
  for (size_t i = 0; i < r.params.size(); ++i) {
    out += fmt::format("{}\n    {}: ", i ? "," : "", json_string(r.params[i].first));
    append_json(out, r.params[i].second.to(at::kDouble));
  }
  out += fmt::format("{}}},\n  \"lags\": ", r.params.empty() ? "" : "\n  ");
  append_json(out, r.lags);
  out += ",\n  \"expected\": ";
  append_json(out, r.expected.to(at::kDouble));
  if (r.empirical.defined()) {
    out += ",\n  \"empirical\": ";
    append_json(out, r.empirical.to(at::kDouble));
  }
  out += "\n}\n";
  return out;
}

struct Series {
  std::string title, style;  // style: gnuplot's "with ..." clause
  at::Tensor values;         // (2L - 1,)
};
struct Panel {
  std::string title;
  std::vector<Series> series;
  std::string yrange = "[*:*]";  // gnuplot's
};

// Up to four panels of series against the lags, in a 2 x 2 grid (one panel: the whole image).
void plot_panels(const std::string& png_path, const std::string& title, const at::Tensor& lags,
                 const std::vector<Panel>& panels) {
  const int rows = panels.size() > 1 ? 2 : 1;
  std::string script = fmt::format("set multiplot layout {},{} title {}\nset xlabel 'lag m - n'\nset grid\n", rows,
                                   rows, gnuplot_quote(title));
  for (const Panel& panel : panels) {
    script += fmt::format("set title {}\nset yrange {}\nplot ", gnuplot_quote(panel.title), panel.yrange);
    for (size_t s = 0; s < panel.series.size(); ++s)
      script += fmt::format("{}'-' using 1:2 {} title {}", s ? ", " : "", panel.series[s].style,
                            gnuplot_quote(panel.series[s].title));
    script += "\n";
    for (const Series& series : panel.series) {
      at::Tensor values = series.values.to(at::kDouble).contiguous();
      for (int64_t i = 0; i < values.size(0); ++i)
        script += fmt::format("{} {:.9g}\n", lags[i].item<int64_t>(), values[i].item<double>());
      script += "e\n";
    }
  }
  plot_png(png_path, script + "unset multiplot\n", 1200, 800);
}

// SPE: expected against empirical for up to four (h, d) pairs.
std::vector<Panel> spe_panels(const KernelArgs& a, const KernelReport& r) {
  std::vector<Panel> panels;
  for (int64_t h = 0; h < std::min<int64_t>(a.heads, 2); ++h)
    for (int64_t d = 0; d < std::min<int64_t>(a.dim, 2); ++d)
      panels.push_back({fmt::format("head {}, feature {}", h, d),
                        {{"empirical (one draw)", "with points pt 7 ps 0.4 lc rgb '#999999'", r.empirical[h][d]},
                         {"expected", "with lines lw 2 lc rgb '#c0392b'", r.expected[h][d]}}});
  return panels;
}

// The exact kinds: one panel, a line for each of up to eight heads spread over 0 .. H - 1
// (rotary: one line, every head's), the y axis from 0 (a flat kernel, as toeplitz's at its start,
// shows as a line at its value rather than an empty range).
std::vector<Panel> exact_panels(const KernelArgs& a, const KernelReport& r) {
  const double low = std::min(0.0, r.expected.min().item<double>());
  const double high = std::max(0.0, r.expected.max().item<double>());
  Panel panel{"what a query at m sees of a key at n", {},
              fmt::format("[{:.9g}:{:.9g}]", low, high + (high - low) / 20)};
  if (a.pe == "rotary") {
    panel.series.push_back({"every head", "with lines lw 2", r.expected[0]});
    return {panel};
  }
  const int64_t shown = std::min<int64_t>(a.heads, 8);
  for (int64_t i = 0; i < shown; ++i) {
    const int64_t h = shown == 1 ? 0 : i * (a.heads - 1) / (shown - 1);
    panel.series.push_back({fmt::format("head {}", h), "with lines lw 2", r.expected[h]});
  }
  return {panel};
}

void write_png(const KernelArgs& a, const KernelReport& r) {
  const std::string title = fmt::format("{} kernel: {}{}", label(a), sizes(a),
                                        is_spe(a.pe) ? fmt::format(" seed={}", a.seed) : "");
  plot_panels(a.png_path, title, r.lags, is_spe(a.pe) ? spe_panels(a, r) : exact_panels(a, r));
}

// "decay: H=2 L=16: exact kernel at lags 0, 1, 15: head 0: 1 0.9688 0.6211 | head 1: ...".
std::string exact_summary(const KernelArgs& a, const KernelReport& r) {
  std::vector<int64_t> shown{0};
  for (int64_t lag : {int64_t{1}, a.length - 1})
    if (lag > shown.back() && lag < a.length) shown.push_back(lag);
  std::string line = fmt::format("{}: {}: exact kernel at lags {}:", label(a), sizes(a), fmt::join(shown, ", "));
  const int64_t heads = a.pe == "rotary" ? 1 : std::min<int64_t>(a.heads, 4);
  for (int64_t h = 0; h < heads; ++h) {
    line += a.pe == "rotary" ? " every head:" : fmt::format("{} head {}:", h ? " |" : "", h);
    for (int64_t lag : shown) line += fmt::format(" {:.4g}", r.expected[h][lag + a.length - 1].item<double>());
  }
  return line + (heads < a.heads && a.pe != "rotary" ? " | ...\n" : "\n");
}

// The options that apply to some kinds only: refused for the others, and the required ones must
// be given for theirs.
struct OptionScope {
  const char* option;
  std::vector<std::string> kinds;
  bool required;
};

void check_scopes(const KernelArgs& a, const CLI::App& sub) {
  static const std::vector<OptionScope> scopes = {
      {"--dim", {"sine", "conv", "rotary"}, true},   {"--realizations", {"sine", "conv"}, true},
      {"--seed", {"sine", "conv"}, true},            {"--gated", {"sine", "conv"}, false},
      {"--sines", {"sine"}, false},                  {"--kernel-size", {"conv"}, false},
      {"--clip", {"toeplitz"}, false},               {"--base", {"rotary"}, false},
      {"--rope-scaling", {"rotary"}, false},         {"--factor", {"rotary"}, false},
      {"--original-length", {"rotary"}, false}};
  for (const OptionScope& scope : scopes) {
    const bool applies = std::find(scope.kinds.begin(), scope.kinds.end(), a.pe) != scope.kinds.end();
    const bool given = sub.count(scope.option) > 0;
    if (given && !applies)
      throw CLI::ValidationError(scope.option, fmt::format("applies to --pe {} only, not --pe {}",
                                                           fmt::join(scope.kinds, ", "), a.pe));
    if (!given && applies && scope.required)
      throw CLI::RequiredError(fmt::format("{} is required for --pe {}", scope.option, a.pe),
                               CLI::ExitCodes::RequiredError);
  }
}

void check_rotary(const KernelArgs& a, const CLI::App& sub) {
  if (a.dim % 2 != 0)
    throw CLI::ValidationError("--dim", fmt::format("rotary turns features in pairs: must be even, got {}", a.dim));
  if (!(a.base > 1) || !std::isfinite(a.base))
    throw CLI::ValidationError("--base",
                               fmt::format("must be finite and > 1 (theta_i = base^(-2i / D)), got {}", a.base));
  const bool scaled = a.rope_scaling != "none", yarn = a.rope_scaling == "yarn";
  if (scaled != (sub.count("--factor") > 0)) {
    if (scaled)
      throw CLI::RequiredError(fmt::format("--factor is required with --rope-scaling {}", a.rope_scaling),
                               CLI::ExitCodes::RequiredError);
    throw CLI::ValidationError("--factor", "applies to --rope-scaling linear, ntk or yarn, not none");
  }
  if (yarn != (sub.count("--original-length") > 0)) {
    if (yarn)
      throw CLI::RequiredError("--original-length is required with --rope-scaling yarn (the training length)",
                               CLI::ExitCodes::RequiredError);
    throw CLI::ValidationError("--original-length",
                               fmt::format("applies to --rope-scaling yarn only, not {}", a.rope_scaling));
  }
  if (a.rope_scaling == "ntk" && a.dim < 4)
    throw CLI::ValidationError("--dim", fmt::format("ntk scaling needs at least 4 features, got {}", a.dim));
}

// The empirical kernel averages every pair of positions: L^2 H D R multiply-adds; the exact ones
// hold H (2L - 1) values (and rotary rotates L D features).
void check_size(const KernelArgs& a) {
  const double length = static_cast<double>(a.length);
  if (is_spe(a.pe)) {
    const double work = length * length * a.heads * a.dim * a.realizations;
    constexpr double kMaxWork = 2e11;  // about a minute on two cores
    if (work > kMaxWork)
      throw CLI::ValidationError("--length", fmt::format(
          "L^2 H D R = {:.3g} multiply-adds for the empirical kernel exceeds the limit of {:.0g}: "
          "reduce --length, --heads, --dim or --realizations", work, kMaxWork));
    return;
  }
  const double values = std::max(a.heads * (2 * length - 1), a.pe == "rotary" ? length * a.dim : 0.0);
  constexpr double kMaxValues = 2e7;  // the JSON: about 400 MB, written in about a minute
  if (values > kMaxValues)
    throw CLI::ValidationError("--length", fmt::format(
        "{} = {:.3g} values for the exact kernel exceeds the limit of {:.0g}: reduce --length, --heads{}",
        a.pe == "rotary" ? "max(H (2L - 1), L D)" : "H (2L - 1)", values, kMaxValues,
        a.pe == "rotary" ? " or --dim" : ""));
}

// The options a checkpoint decides (--checkpoint refuses them) and those it alone takes.
constexpr const char* kFromCheckpoint[] = {"--pe",      "--heads", "--dim",          "--realizations",
                                           "--sines",   "--kernel-size", "--gated",  "--clip",
                                           "--base",    "--rope-scaling", "--factor", "--original-length"};

void check_source(const KernelArgs& a, const CLI::App& sub) {
  if (!a.checkpoint.empty()) {
    for (const char* option : kFromCheckpoint)
      if (sub.count(option) > 0)
        throw CLI::ValidationError(option, "comes from the checkpoint: do not combine it with --checkpoint");
    return;
  }
  if (sub.count("--layer") > 0) throw CLI::ValidationError("--layer", "applies to --checkpoint only");
  for (const char* option : {"--pe", "--heads"})
    if (sub.count(option) == 0)
      throw CLI::RequiredError(fmt::format("{} is required (or --checkpoint, whose model gives it)", option),
                               CLI::ExitCodes::RequiredError);
}

void check_args(const KernelArgs& a, const CLI::App& sub) {
  if (a.checkpoint.empty()) check_scopes(a, sub);
  if (a.pe == "conv" && a.kernel_size > a.length)
    throw CLI::ValidationError("--kernel-size", fmt::format(
        "{} is longer than --length {}: the kernel must fit in the sequence", a.kernel_size, a.length));
  if (a.pe == "rotary") check_rotary(a, sub);
  check_size(a);
}

void run_kernel(const KernelArgs& a, PositionalModules modules) {
  KernelReport report = compute_report(a, modules);
  if (report.empirical.defined()) {
    const at::Tensor error = (report.empirical - report.expected).abs();
    std::cout << fmt::format("{}: {}: max |expected| {:.4g}, mean |empirical - expected| {:.4g}\n", label(a),
                             sizes(a), report.expected.abs().max().item<double>(), error.mean().item<double>());
  } else {
    std::cout << exact_summary(a, report);
  }
  if (!a.json_path.empty()) {
    write_file_atomically(a.json_path, report_json(a, report));
    std::cout << "wrote " << a.json_path << "\n";
  }
  if (!a.png_path.empty()) {
    write_png(a, report);
    std::cout << "wrote " << a.png_path << "\n";
  }
}

constexpr const char* kKernelFooter = R"(Each kind shows what a query at m sees of a key at n against the lag m - n, from the library's
module as a model starts with it, or with --checkpoint as a trained model's layer has it (its kind
and sizes from the checkpoint, the SPE draw from --seed):
  sine, conv  a fresh SPE layer drawn from --seed: per head and feature, the exact expected
              kernel E[sum_r Qbar'[m] Kbar'[m - lag]] and the empirical one of a single draw
  decay       per head, g_h^|m - n| with the module's starting decays g_h = 1 - 2^-(5 + 7h / (H - 1))
              (1 - 2^-5 for one head)
  toeplitz    per head, exp(b_h(clamp(m - n, -clip, clip))) with b at its start (0: every weight 1)
  rotary      (R(m) u) . (R(n) u) for a unit u with mass 2 / D in every rotated pair, equal to its
              mean over u uniform on the unit sphere: the mean over pairs i of cos(theta_i (m - n))
              after the scaling (times (0.1 ln s + 1)^2 under yarn); the same for every head
decay, toeplitz and rotary are exact: their JSON has no "empirical", and "expected" is (H, 2L - 1)
rather than (H, D, 2L - 1) ("axes" says which).)";

}  // namespace

void add_kernel_command(CLI::App& app) {
  auto* sub = app.add_subcommand("kernel", "the positional kernel a relative position induces: SPE exact vs sampled, "
                                           "decay, toeplitz and rotary exact");
  sub->footer(kKernelFooter);
  auto a = std::make_shared<KernelArgs>();
  std::vector<std::string> scalings;
  for (const auto& choice : kRotaryScalings) scalings.emplace_back(choice.name);
  sub->add_option("--pe", a->pe, "the relative position (required unless --checkpoint)")->check(
      CLI::IsMember({"sine", "conv", "decay", "toeplitz", "rotary"}));
  sub->add_option("--checkpoint", a->checkpoint,
                  "a trained model (checkpoint.pt or best.pt): the kernel of its layer --layer, every size from it");
  sub->add_option("--layer", a->layer, "the layer of --checkpoint (0 first)")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--heads", a->heads, "H, attention heads (required unless --checkpoint)")->check(positive_integer());
  sub->add_option("--dim", a->dim, "D, features per head (sine, conv, rotary)")->check(positive_integer());
  sub->add_option("--length", a->length, "L, sequence length")->required()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub->add_option("--realizations", a->realizations, "R, realizations per code (sine, conv)")->check(positive_integer());
  sub->add_option("--sines", a->sines, "K, sines per feature (sine)")->check(positive_integer())->capture_default_str();
  sub->add_option("--kernel-size", a->kernel_size, "S, filter length (conv)")->check(positive_integer())->capture_default_str();
  sub->add_flag("--gated", a->gated, "apply the gated SPE filter (sine, conv)");
  sub->add_option("--seed", a->seed, "seed of the parameters and of the draw (sine, conv)");
  sub->add_option("--clip", a->clip, "lags beyond +-clip share its bias (toeplitz)")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--base", a->base, "theta_i = base^(-2i / D) (rotary)")->capture_default_str();
  sub->add_option("--rope-scaling", a->rope_scaling, "rotary length scaling: linear (position interpolation), ntk or yarn")
      ->check(CLI::IsMember(scalings))->capture_default_str();
  sub->add_option("--factor", a->factor, "s, the rope scaling factor (rotary with --rope-scaling)")
      ->check(number_in(1.0, 1e6));
  sub->add_option("--original-length", a->original_length, "the training length (rotary with --rope-scaling yarn)")
      ->check(positive_integer());
  sub->add_flag("--causal", a->causal, "zero the keys after the query (m - n < 0), as causal attention does");
  sub->add_option("--dtype", a->dtype, "computation dtype")->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
  sub->add_option("--json", a->json_path, "write the kernel report as JSON");
  sub->add_option("--png", a->png_path, "plot the kernel (SPE: expected against empirical) with gnuplot");
  sub->callback([a, sub] {
    check_source(*a, *sub);
    PositionalModules modules;
    if (a->checkpoint.empty()) {
      check_args(*a, *sub);
      modules = fresh_modules(*a);
    } else {
      modules = trained_modules(*a);  // fills in the kind and sizes
      check_args(*a, *sub);
    }
    run_kernel(*a, modules);
  });
}

}  // namespace spe::cli
