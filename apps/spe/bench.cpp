// `spe bench`: the fused kernels against the slow reference paths, side by side in one run,
// with GFLOP/s against this machine's GEMM rate measured in the same process. One JSON line
// per (scenario, implementation, size) on stdout.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "measure.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/attention/linear.h"
#include "spe/ops/causal_linear_attention.h"

namespace spe::cli {
namespace {

struct BenchArgs {
  std::vector<int64_t> lengths{4096};
  int64_t batch = 4, heads = 8, dim = 64, value_dim = 64, chunk = ops::kCausalChunk;
  int64_t realizations = 64, sines = 5;
  bool gated = true;
  int repeats = 5;
  std::string dtype = "float32";
  bool reference = true;
  int64_t reference_max_length = 8192;
};

std::string env_or_unset(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "unset";
}

// The flops the fused kernel itself performs (masked chunk products counted whole).
double fused_flops(const BenchArgs& a, int64_t n, bool backward) {
  double per_pair = 0;
  const double m = a.dim, dv = a.value_dim;
  for (int64_t start = 0; start < n; start += a.chunk) {
    const double c = std::min(a.chunk, n - start);
    per_pair += backward ? 6 * c * c * (m + dv) + 10 * c * m * dv : 2 * c * c * (m + dv) + 4 * c * m * dv;
  }
  return per_pair * a.batch * a.heads;
}

// One implementation of a scenario at one size: its forward alone and forward + backward.
struct Candidate {
  std::string name;
  std::function<void()> forward, forward_backward;
};
// The candidates of a scenario at length N (they own their inputs).
using Scenario = std::function<std::vector<Candidate>(int64_t n)>;

struct Measured {
  int64_t n;
  std::string name;
  Timing forward, forward_backward;
  double memory_mib = 0;
};

// Times every candidate at every length first (the candidates of one length side by side,
// their repeats interleaved), then measures peak memory (which fixes the allocator's mmap
// threshold for the rest of the process, so it must not precede any timing).
std::vector<Measured> run_scenario(const BenchArgs& a, const Scenario& scenario) {
  std::vector<Measured> results;
  for (int64_t n : a.lengths) {
    const std::vector<Candidate> candidates = scenario(n);
    std::vector<std::function<void()>> forwards, forward_backwards;
    for (const Candidate& c : candidates) {
      forwards.push_back(c.forward);
      forward_backwards.push_back(c.forward_backward);
    }
    const std::vector<Timing> forward = time_medians_interleaved(forwards, a.repeats);
    const std::vector<Timing> forward_backward = time_medians_interleaved(forward_backwards, a.repeats);
    for (size_t i = 0; i < candidates.size(); ++i)
      results.push_back({n, candidates[i].name, forward[i], forward_backward[i]});
  }
  size_t i = 0;
  for (int64_t n : a.lengths)
    for (const Candidate& c : scenario(n)) results[i++].memory_mib = peak_memory_mib(c.forward_backward);
  return results;
}

// One JSON line per measurement: `fields` describes the scenario, flops(n, backward) counts the
// fused algorithm's work, and the speedup is against the fused candidate at the same length.
void print_results(const std::vector<Measured>& results, const std::string& fields,
                   const std::function<double(int64_t, bool)>& flops, double gemm) {
  for (const Measured& m : results) {
    double fused_s = m.forward_backward.median_s;
    for (const Measured& other : results)
      if (other.n == m.n && other.name == "fused") fused_s = other.forward_backward.median_s;
    const double flops_f = flops(m.n, false), flops_fb = flops_f + flops(m.n, true);
    std::cout << fmt::format(
        "{{{}, \"impl\": \"{}\", \"N\": {}, \"threads\": {}, \"forward_s\": {:.6g}, \"forward_backward_s\": {:.6g}, "
        "\"fused_gflop_forward\": {:.4g}, \"fused_gflop_forward_backward\": {:.4g}, \"gflops_forward\": {:.4g}, "
        "\"gflops_forward_backward\": {:.4g}, \"gemm_gflops\": {:.4g}, \"fraction_of_gemm_forward\": {:.3f}, "
        "\"fraction_of_gemm_forward_backward\": {:.3f}, \"peak_above_inputs_mib\": {:.1f}, "
        "\"fused_speedup\": {:.3g}, \"OPENBLAS_NUM_THREADS\": \"{}\", \"OPENBLAS_CORETYPE\": \"{}\"}}\n",
        fields, m.name, m.n, at::get_num_threads(), m.forward.median_s, m.forward_backward.median_s, flops_f / 1e9,
        flops_fb / 1e9, flops_f / m.forward.median_s / 1e9, flops_fb / m.forward_backward.median_s / 1e9, gemm,
        flops_f / m.forward.median_s / 1e9 / gemm, flops_fb / m.forward_backward.median_s / 1e9 / gemm,
        m.memory_mib, m.forward_backward.median_s / fused_s, env_or_unset("OPENBLAS_NUM_THREADS"),
        env_or_unset("OPENBLAS_CORETYPE"));
  }
}

void bench_causal(const BenchArgs& a) {
  const auto dtype = a.dtype == "float64" ? at::kDouble : at::kFloat;
  const double gemm = measure_gemm_gflops(2048, 5);
  auto scenario = [&](int64_t n) {
    struct Inputs {
      at::Tensor q, k, v, grad;
    };
    auto x = std::make_shared<Inputs>(Inputs{at::rand({a.batch, n, a.heads, a.dim}, dtype).requires_grad_(),
                                             at::rand({a.batch, n, a.heads, a.dim}, dtype).requires_grad_(),
                                             at::randn({a.batch, n, a.heads, a.value_dim}, dtype).requires_grad_(),
                                             at::randn({a.batch, n, a.heads, a.value_dim}, dtype)});
    auto candidate = [x](std::string name, std::function<at::Tensor()> attention) {
      return Candidate{std::move(name),
                       [attention] {
                         at::NoGradGuard no_grad;
                         attention();
                       },
                       [x, attention] {
                         for (at::Tensor* t : {&x->q, &x->k, &x->v}) t->mutable_grad().reset();
                         attention().backward(x->grad);
                       }};
    };
    std::vector<Candidate> candidates{
        candidate("fused", [x, &a] { return ops::causal_linear_attention(x->q, x->k, x->v, 1e-6, a.chunk); })};
    // model.positional.kind decay: the same attention with g^(m - n) on each pair, the fused kernel
    // given the decays; learnable (model.positional.learnable_decay), so the backward also forms
    // d loss / d log g.
    const at::Tensor log_decay = at::full({a.heads}, std::log(0.99), dtype).requires_grad_();
    candidates.push_back(candidate("decayed", [x, log_decay] {
      log_decay.mutable_grad().reset();
      return decayed_linear_attention(x->q, x->k, x->v, log_decay, /*causal=*/true);
    }));
    if (a.reference && n <= a.reference_max_length)
      candidates.push_back(candidate("quadratic", [x] { return causal_linear_attention_quadratic(x->q, x->k, x->v); }));
    return candidates;
  };
  const std::string fields = fmt::format(
      "\"scenario\": \"causal_linear_attention\", \"dtype\": \"{}\", \"B\": {}, \"H\": {}, \"M\": {}, \"Dv\": {}, "
      "\"chunk\": {}",
      a.dtype, a.batch, a.heads, a.dim, a.value_dim, a.chunk);
  print_results(run_scenario(a, scenario), fields, [&](int64_t n, bool backward) { return fused_flops(a, n, backward); },
                gemm);
}

// Flops of the fused sineSPE filter for q and k: per (h, n), building the code costs 4 D K R,
// applying it 2 B D R. The backward rebuilds the code with its shift (4 D K R + 2 D R), forms
// grad_x and grad_code (2 x 2 B D R) and the moments [Omega; 1; n Omega]^T grad_code
// (8 D K R + 2 D R).
double sine_flops(const BenchArgs& a, int64_t n, bool backward) {
  const double D = a.dim, K = a.sines, R = a.realizations, B = a.batch;
  const double code = 4 * D * K * R, apply = 2 * B * D * R;
  return 2.0 * n * a.heads * (backward ? 3 * code + 4 * D * R + 2 * apply : code + apply);
}

void bench_sine(const BenchArgs& a) {
  const auto dtype = a.dtype == "float64" ? at::kDouble : at::kFloat;
  const double gemm = measure_gemm_gflops(2048, 5);
  SineSPE spe(SineSPEOptions(a.heads, a.dim).sines(a.sines).realizations(a.realizations));
  SPEFilter filter(SPEFilterOptions(a.heads, a.dim).gated(a.gated));
  spe->to(dtype);
  filter->to(dtype);
  auto scenario = [&](int64_t n) {
    struct Inputs {
      at::Tensor q, k, grad_qhat, grad_khat;  // upstream gradients, fixed across steps
    };
    auto x = std::make_shared<Inputs>(Inputs{at::randn({a.batch, n, a.heads, a.dim}, dtype).requires_grad_(),
                                             at::randn({a.batch, n, a.heads, a.dim}, dtype).requires_grad_(),
                                             at::randn({a.batch, n, a.heads, a.realizations}, dtype),
                                             at::randn({a.batch, n, a.heads, a.realizations}, dtype)});
    // one training step's SPE work: draw the code, filter q and k (fused, or materialised)
    auto filtered = [x, n, &spe, &filter](bool fused) {
      SPECode code = spe->forward(n);
      if (fused) return filter->forward(x->q, x->k, code);
      SPECode gated = filter->apply_gate(code.materialise());
      return std::make_pair(spe_apply_code(x->q, gated.qbar), spe_apply_code(x->k, gated.kbar));
    };
    auto candidate = [&, x, filtered](std::string name, bool fused) {
      return Candidate{std::move(name),
                       [filtered, fused] {
                         at::NoGradGuard no_grad;
                         filtered(fused);
                       },
                       [&, x, filtered, fused] {
                         spe->zero_grad(/*set_to_none=*/true);
                         filter->zero_grad(/*set_to_none=*/true);
                         for (at::Tensor* t : {&x->q, &x->k}) t->mutable_grad().reset();
                         auto [qhat, khat] = filtered(fused);
                         torch::autograd::backward({qhat, khat}, {x->grad_qhat, x->grad_khat});
                       }};
    };
    std::vector<Candidate> candidates{candidate("fused", true)};
    if (a.reference && n <= a.reference_max_length) candidates.push_back(candidate("materialised", false));
    return candidates;
  };
  const std::string fields = fmt::format(
      "\"scenario\": \"sine_spe_filter\", \"dtype\": \"{}\", \"gated\": {}, \"B\": {}, \"H\": {}, \"D\": {}, "
      "\"R\": {}, \"K\": {}",
      a.dtype, a.gated ? "true" : "false", a.batch, a.heads, a.dim, a.realizations, a.sines);
  print_results(run_scenario(a, scenario), fields, [&](int64_t n, bool backward) { return sine_flops(a, n, backward); },
                gemm);
}

}  // namespace

// convSPE code generation, direct correlation (1-D: the fused op) against FFTs, over filter sizes:
// the measurements behind ConvAlgorithm::automatic. Drawing a code (forward) and, as training does,
// a code and its filters' gradients (forward + backward), interleaved.
void bench_conv(const BenchArgs& a, int64_t ndim, const std::vector<int64_t>& kernel_sizes) {
  const std::vector<int64_t> shape(ndim, a.lengths.front());
  for (int64_t size : kernel_sizes) {
    std::vector<ConvSPE> modules;
    std::vector<std::function<void()>> forwards, trainings;
    for (ConvAlgorithm algorithm : {ConvAlgorithm::direct, ConvAlgorithm::fft})
      modules.emplace_back(
          ConvSPEOptions(a.heads, a.dim).ndim(ndim).kernel_size(size).realizations(a.realizations).algorithm(algorithm));
    for (ConvSPE& spe : modules) {
      forwards.push_back([spe, &shape]() mutable {
        at::NoGradGuard no_grad;
        spe->forward(shape);
      });
      trainings.push_back([spe, &shape]() mutable {
        for (auto& p : spe->parameters()) p.mutable_grad().reset();
        const SPECode code = spe->forward(shape);
        (code.qbar.sum() + code.kbar.sum()).backward();
      });
    }
    const std::vector<Timing> forward = time_medians_interleaved(forwards, a.repeats);
    const std::vector<Timing> training = time_medians_interleaved(trainings, a.repeats);
    for (size_t i = 0; i < modules.size(); ++i)
      std::cout << fmt::format(
          "{{\"scenario\": \"conv_spe_code\", \"algorithm\": \"{}\", \"ndim\": {}, \"extent\": {}, \"S\": {}, "
          "\"H\": {}, \"D\": {}, \"R\": {}, \"threads\": {}, \"forward_s\": {:.6g}, \"forward_backward_s\": {:.6g}}}\n",
          i == 0 ? "direct" : "fft", ndim, a.lengths.front(), size, a.heads, a.dim, a.realizations,
          at::get_num_threads(), forward[i].median_s, training[i].median_s);
  }
}

// The options every kernel scenario has: sizes, repeats, dtype and the reference switch.
void add_common_options(CLI::App* scenario, BenchArgs& a, const std::string& dim_help) {
  scenario->add_option("--length", a.lengths, "sequence lengths N (several allowed)")->check(positive_integer())->capture_default_str();
  scenario->add_option("--batch", a.batch, "B")->check(positive_integer())->capture_default_str();
  scenario->add_option("--heads", a.heads, "H")->check(positive_integer())->capture_default_str();
  scenario->add_option("--dim", a.dim, dim_help)->check(positive_integer())->capture_default_str();
  scenario->add_option("--repeats", a.repeats, "timed repeats (median reported)")->check(positive_integer())->capture_default_str();
  scenario->add_option("--dtype", a.dtype, "float32 or float64")->check(CLI::IsMember({"float32", "float64"}))->capture_default_str();
  scenario->add_option("--reference-max-length", a.reference_max_length, "skip the reference path above this N")->capture_default_str();
  scenario->add_flag("!--no-reference", a.reference, "only the fused kernel");
}

void add_bench_command(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "fused kernels against the reference paths (JSON lines)");
  sub->require_subcommand(1);
  auto a = std::make_shared<BenchArgs>();
  auto* causal = sub->add_subcommand("causal", "causal linear attention: fused chunked kernel vs quadratic form");
  add_common_options(causal, *a, "M, query/key features");
  causal->add_option("--value-dim", a->value_dim, "Dv")->check(positive_integer())->capture_default_str();
  causal->add_option("--chunk", a->chunk, "C, positions per chunk")->check(CLI::Range(int64_t{1}, int64_t{4096}))->capture_default_str();
  causal->callback([a] { bench_causal(*a); });

  auto* sine = sub->add_subcommand("sine", "sineSPE filter of q and k: fused kernel vs materialised codes");
  add_common_options(sine, *a, "D, features per head");
  sine->add_option("--realizations", a->realizations, "R")->check(positive_integer())->capture_default_str();
  sine->add_option("--sines", a->sines, "K")->check(positive_integer())->capture_default_str();
  sine->add_flag("!--ungated", a->gated, "without the gate");
  sine->callback([a] { bench_sine(*a); });

  auto* conv = sub->add_subcommand("conv", "convSPE codes, forward and with their gradients: direct correlation vs FFT over filter sizes");
  auto conv_ndim = std::make_shared<int64_t>(1);
  auto conv_sizes = std::make_shared<std::vector<int64_t>>(std::vector<int64_t>{32, 128, 512, 1024});
  conv->add_option("--length", a->lengths, "extent of each axis")->check(positive_integer())->capture_default_str();
  conv->add_option("--ndim", *conv_ndim, "1 (sequences) or 2 (images)")->check(CLI::Range(1, 2))->capture_default_str();
  conv->add_option("--kernel-size", *conv_sizes, "filter sizes S (several allowed)")->check(positive_integer())->capture_default_str();
  conv->add_option("--heads", a->heads, "H")->check(positive_integer())->capture_default_str();
  conv->add_option("--dim", a->dim, "D")->check(positive_integer())->capture_default_str();
  conv->add_option("--realizations", a->realizations, "R")->check(positive_integer())->capture_default_str();
  conv->add_option("--repeats", a->repeats, "timed repeats (median reported)")->check(positive_integer())->capture_default_str();
  conv->callback([a, conv_ndim, conv_sizes] { bench_conv(*a, *conv_ndim, *conv_sizes); });
  add_bench_layer_scenarios(*sub);
  add_bench_generate_scenario(*sub);
  add_bench_train_scenario(*sub);
}

}  // namespace spe::cli
