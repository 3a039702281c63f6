// `spe kernel`: the positional kernel an SPE layer induces, exact and as sampled.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "gnuplot.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/util/files.h"

namespace spe::cli {
namespace {

struct KernelArgs {
  std::string pe;
  int64_t heads = 0, dim = 0, length = 0, realizations = 0;
  int64_t sines = 5, kernel_size = 16;
  bool gated = false;
  uint64_t seed = 0;
  std::string dtype = "float64";
  std::string json_path, png_path;
};

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
  std::vector<std::pair<std::string, at::Tensor>> params;  // as stored
  at::Tensor lags;       // (2L - 1,)
  at::Tensor expected;   // (H, D, 2L - 1)
  at::Tensor empirical;  // (H, D, 2L - 1)
};

KernelReport compute_report(const KernelArgs& a) {
  at::NoGradGuard no_grad;
  at::manual_seed(a.seed);  // parameters are drawn from the default generator
  const auto dtype = a.dtype == "float64" ? at::kDouble : at::kFloat;
  KernelReport report;
  auto keep_parameters = [&report](const torch::nn::Module& module) {
    for (const auto& p : module.named_parameters()) report.params.emplace_back(p.key(), p.value());
  };
  auto generator = make_generator(a.seed);
  SPECode code;
  at::Tensor expected;
  if (a.pe == "sine") {
    SineSPE spe(SineSPEOptions(a.heads, a.dim).sines(a.sines).realizations(a.realizations));
    spe->to(dtype);
    code = spe->forward(a.length, c10::nullopt, generator);
    expected = spe->expected_kernel(a.length);
    keep_parameters(*spe);
  } else {
    ConvSPE spe(ConvSPEOptions(a.heads, a.dim).kernel_size(a.kernel_size).realizations(a.realizations));
    spe->to(dtype);
    code = spe->forward({a.length}, c10::nullopt, generator);
    expected = spe->expected_kernel({a.length});
    keep_parameters(*spe);
  }
  SPEFilter filter(SPEFilterOptions(a.heads, a.dim).gated(a.gated));
  filter->to(dtype);
  keep_parameters(*filter);
  auto gate_generator = make_generator(a.seed + 1);
  report.expected = filter->expected_kernel(expected, a.realizations);
  report.empirical = empirical_kernel(filter->apply_gate(code, gate_generator));
  report.lags = at::arange(-(a.length - 1), a.length, at::kLong);
  return report;
}

std::string report_json(const KernelArgs& a, const KernelReport& r) {
  std::string out = "{\n";
  out += fmt::format("  \"pe\": {},\n  \"heads\": {},\n  \"dim\": {},\n  \"length\": {},\n",
                     json_string(a.pe), a.heads, a.dim, a.length);
  out += fmt::format("  \"realizations\": {},\n  \"gated\": {},\n  \"seed\": {},\n  \"dtype\": {},\n",
                     a.realizations, a.gated ? "true" : "false", a.seed, json_string(a.dtype));
  if (a.pe == "sine") out += fmt::format("  \"sines\": {},\n", a.sines);
  if (a.pe == "conv") out += fmt::format("  \"kernel_size\": {},\n", a.kernel_size);
  out += "  \"params\": {";
  for (size_t i = 0; i < r.params.size(); ++i) {
    out += fmt::format("{}\n    {}: ", i ? "," : "", json_string(r.params[i].first));
    append_json(out, r.params[i].second.to(at::kDouble));
  }
  out += "\n  },\n  \"lags\": ";
  append_json(out, r.lags);
  out += ",\n  \"expected\": ";
  append_json(out, r.expected.to(at::kDouble));
  out += ",\n  \"empirical\": ";
  append_json(out, r.empirical.to(at::kDouble));
  out += "\n}\n";
  return out;
}

// Plots expected against empirical for up to four (h, d) pairs.
void write_png(const KernelArgs& a, const KernelReport& r) {
  std::vector<std::pair<int64_t, int64_t>> panels;
  for (int64_t h = 0; h < std::min<int64_t>(a.heads, 2); ++h)
    for (int64_t d = 0; d < std::min<int64_t>(a.dim, 2); ++d) panels.emplace_back(h, d);
  std::string script = fmt::format(
      "set multiplot layout 2,2 title {}\nset xlabel 'lag m - n'\nset grid\n",
      gnuplot_quote(fmt::format("{}SPE{} kernel: H={} D={} L={} R={} seed={}", a.pe, a.gated ? " (gated)" : "",
                                a.heads, a.dim, a.length, a.realizations, a.seed)));
  for (const auto& [h, d] : panels) {
    script += fmt::format("set title 'head {}, feature {}'\n", h, d);
    script += "plot '-' using 1:2 with points pt 7 ps 0.4 lc rgb '#999999' title 'empirical (one draw)', "
              "'-' using 1:2 with lines lw 2 lc rgb '#c0392b' title 'expected'\n";
    for (const auto* series : {&r.empirical, &r.expected}) {
      at::Tensor values = (*series)[h][d].to(at::kDouble).contiguous();
      for (int64_t i = 0; i < values.size(0); ++i) {
        script += fmt::format("{} {:.9g}\n", r.lags[i].item<int64_t>(), values[i].item<double>());
      }
      script += "e\n";
    }
  }
  script += "unset multiplot\n";
  plot_png(a.png_path, script, 1200, 800);
}

void check_args(const KernelArgs& a, const CLI::App& sub) {
  if (a.pe == "sine") {
    if (sub.count("--kernel-size") > 0)
      throw CLI::ValidationError("--kernel-size", "applies to --pe conv only, not --pe sine");
  } else {
    if (sub.count("--sines") > 0)
      throw CLI::ValidationError("--sines", "applies to --pe sine only, not --pe conv");
    if (a.kernel_size > a.length)
      throw CLI::ValidationError("--kernel-size", fmt::format(
          "{} is longer than --length {}: the kernel must fit in the sequence", a.kernel_size, a.length));
  }
  // The empirical kernel averages every pair of positions: L^2 H D R multiply-adds.
  const double work = static_cast<double>(a.length) * a.length * a.heads * a.dim * a.realizations;
  constexpr double kMaxWork = 2e11;  // about a minute on two cores
  if (work > kMaxWork)
    throw CLI::ValidationError("--length", fmt::format(
        "L^2 H D R = {:.3g} multiply-adds for the empirical kernel exceeds the limit of {:.0g}: "
        "reduce --length, --heads, --dim or --realizations", work, kMaxWork));
}

void run_kernel(const KernelArgs& a) {
  KernelReport report = compute_report(a);
  const at::Tensor error = (report.empirical - report.expected).abs();
  std::cout << fmt::format("{}SPE{}: H={} D={} L={} R={}: max |expected| {:.4g}, "
                           "mean |empirical - expected| {:.4g}\n",
                           a.pe, a.gated ? " (gated)" : "", a.heads, a.dim, a.length,
                           a.realizations, report.expected.abs().max().item<double>(),
                           error.mean().item<double>());
  if (!a.json_path.empty()) {
    write_file_atomically(a.json_path, report_json(a, report));
    std::cout << "wrote " << a.json_path << "\n";
  }
  if (!a.png_path.empty()) {
    write_png(a, report);
    std::cout << "wrote " << a.png_path << "\n";
  }
}

}  // namespace

void add_kernel_command(CLI::App& app) {
  auto* sub = app.add_subcommand("kernel", "the positional kernel an SPE layer induces: exact vs sampled");
  auto a = std::make_shared<KernelArgs>();
  sub->add_option("--pe", a->pe, "the SPE variant")->required()->check(CLI::IsMember({"sine", "conv"}));
  sub->add_option("--heads", a->heads, "H, attention heads")->required()->check(positive_integer());
  sub->add_option("--dim", a->dim, "D, features per head")->required()->check(positive_integer());
  sub->add_option("--length", a->length, "L, sequence length")->required()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub->add_option("--realizations", a->realizations, "R, realizations per code")->required()->check(positive_integer());
  sub->add_option("--sines", a->sines, "K, sines per feature (sine)")->check(positive_integer())->capture_default_str();
  sub->add_option("--kernel-size", a->kernel_size, "S, filter length (conv)")->check(positive_integer())->capture_default_str();
  sub->add_flag("--gated", a->gated, "apply the gated SPE filter");
  sub->add_option("--seed", a->seed, "seed of the parameters and of the draw")->required();
  sub->add_option("--dtype", a->dtype, "computation dtype")->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
  sub->add_option("--json", a->json_path, "write the kernel report as JSON");
  sub->add_option("--png", a->png_path, "plot expected against empirical (gnuplot)");
  sub->callback([a, sub] {
    check_args(*a, *sub);
    run_kernel(*a);
  });
}

}  // namespace spe::cli
