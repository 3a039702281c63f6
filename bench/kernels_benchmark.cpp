// Google Benchmark targets of the fused kernels and their reference paths, side by side, on
// every core:
//   build/bench/spe_benchmarks --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Sizes are (N) with B = 4, H = 8, D = M = R = 64, K = 5 (the separable numerator: J = 2K + 1
// coefficients per feature, sineSPE's exact gated code), except convSPE's correlation, at the text
// task's code (N = 2048: H D = 64 channels, R = 32, S = 128), and Shaw's relative buckets (k = 64,
// the steps of softmax attention's (B, H, N, N) scores, whose counter is GB/s of those tensors);
// counters give GFLOP/s of the fused algorithm's own flop count, so reference rows read as "the
// same work done this fast".
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <thread>

#include "spe/attention/linear.h"
#include "spe/encoding/relative.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/ops/causal_linear_attention.h"
#include "spe/ops/depthwise_correlation.h"
#include "spe/ops/relative_buckets.h"
#include "spe/ops/separable_linear_attention.h"

namespace {

constexpr int64_t B = 4, H = 8, D = 64, R = 64, K = 5;

void causal(benchmark::State& state, bool fused) {
  const int64_t n = state.range(0);
  at::Tensor q = at::rand({B, n, H, D}).requires_grad_(), k = at::rand({B, n, H, D}).requires_grad_();
  at::Tensor v = at::randn({B, n, H, D}).requires_grad_(), g = at::randn({B, n, H, D});
  for (auto _ : state) {
    for (at::Tensor* t : {&q, &k, &v}) t->mutable_grad().reset();
    at::Tensor out = fused ? spe::ops::causal_linear_attention(q, k, v) : spe::causal_linear_attention_quadratic(q, k, v);
    out.backward(g);
  }
  // forward 2 C^2 (M + Dv) + 4 C M Dv per chunk, backward 6 C^2 (M + Dv) + 10 C M Dv, C = 64
  const double per_position = 8.0 * 64 * (D + D) + 14.0 * D * D;
  state.counters["GFLOP/s"] = benchmark::Counter(per_position * B * H * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void sine(benchmark::State& state, bool fused) {
  const int64_t n = state.range(0);
  spe::SineSPE spe(spe::SineSPEOptions(H, D).sines(K).realizations(R));
  spe::SPEFilter filter(spe::SPEFilterOptions(H, D));
  at::Tensor q = at::randn({B, n, H, D}).requires_grad_(), k = at::randn({B, n, H, D}).requires_grad_();
  for (auto _ : state) {
    for (at::Tensor* t : {&q, &k}) t->mutable_grad().reset();
    for (auto& p : spe->parameters()) p.mutable_grad().reset();
    spe::SPECode code = spe->forward(n);
    if (!fused) code = code.materialise();
    auto [qhat, khat] = filter->forward(q, k, code);
    (qhat.sum() + khat.sum()).backward();
  }
  const double per_position = 2.0 * H * (4 * (4.0 * D * K * R) + 3 * (2.0 * B * D * R));
  state.counters["GFLOP/s"] = benchmark::Counter(per_position * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Linear attention's numerator over separable features psi = phi (x) c, forward and backward: the
// fused op (psi a tile at a time) against psi materialised and multiplied by ATen ops.
void separable(benchmark::State& state, bool fused, bool causal) {
  const int64_t n = state.range(0), J = 2 * K + 1, F = D * J;
  at::Tensor q = at::rand({B, n, H, D}).requires_grad_(), k = at::rand({B, n, H, D}).requires_grad_();
  at::Tensor v = at::randn({B, n, H, D}).requires_grad_(), g = at::randn({B, n, H, D});
  at::Tensor c_q = at::randn({n, H, D, J}).requires_grad_(), c_k = at::randn({n, H, D, J}).requires_grad_();
  for (auto _ : state) {
    for (at::Tensor* t : {&q, &k, &v, &c_q, &c_k}) t->mutable_grad().reset();
    at::Tensor out;
    if (fused) {
      out = spe::ops::separable_linear_numerator(q, k, v, c_q, c_k, causal);
    } else {
      const spe::PositionedFeatures psi = spe::positioned_features(q, k, {c_q, c_k});
      out = causal ? spe::causal_product(psi.query, psi.key, v)
                   : at::einsum("bnhp,bhpd->bnhd", {psi.query, at::einsum("bnhp,bnhd->bhpd", {psi.key, v})});
    }
    out.backward(g);
  }
  // non-causal: 12 F Dv per position; causal (chunks of 32): 14 F Dv + 8 C (F + Dv)
  const double per_position = causal ? 14.0 * F * D + 8.0 * 32 * (F + D) : 12.0 * F * D;
  state.counters["GFLOP/s"] = benchmark::Counter(per_position * B * H * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// convSPE's filters on its noise, forward and the filters' gradient (the noise needs none): the fused
// op on the (X, C, R) rows against LibTorch's grouped conv1d on the (R, C, X) layout it needs,
// with the permutes that layout costs.
void correlation(benchmark::State& state, bool fused) {
  constexpr int64_t C = 64, Rc = 32, S = 128;
  const int64_t n = state.range(0);
  const at::Tensor x = at::randn({n + S - 1, C, Rc});
  at::Tensor w = (at::rand({C, S}) / 8).requires_grad_();
  const at::Tensor no_bias;
  for (auto _ : state) {
    w.mutable_grad().reset();
    const at::Tensor out =
        fused ? spe::ops::depthwise_correlation(x, w)
              : at::conv1d(x.permute({2, 1, 0}), w.unsqueeze(1), no_bias, at::IntArrayRef{1}, at::IntArrayRef{0},
                           at::IntArrayRef{1}, C)
                    .permute({2, 1, 0})
                    .contiguous();
    out.sum().backward();
  }
  const double per_position = 4.0 * C * Rc * S;  // forward and the filters' gradient, 2 S flops each
  state.counters["GFLOP/s"] = benchmark::Counter(per_position * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Shaw's key logits spread from the 2k + 1 distances and the weights summed back per distance,
// forward and backward: the fused runs against ATen's gather and scatter_add over an int64 index
// per (query, key) pair (the path of other devices).
void relative_buckets(benchmark::State& state, bool fused) {
  constexpr int64_t clip = 64, buckets = 2 * clip + 1;
  const int64_t n = state.range(0);
  at::Tensor per_bucket = at::randn({B, H, n, buckets}).requires_grad_();
  at::Tensor weights = at::rand({B, H, n, n}).requires_grad_();
  const at::Tensor index = spe::RelativePosition(spe::RelativePositionOptions(D, clip))->bucket_index(n, n).expand({B, H, n, n});
  const at::Tensor grad_logits = at::randn({B, H, n, n}), grad_sums = at::randn({B, H, n, buckets});
  for (auto _ : state) {
    for (at::Tensor* t : {&per_bucket, &weights}) t->mutable_grad().reset();
    const at::Tensor logits = fused ? spe::ops::expand_relative_buckets(per_bucket, n) : per_bucket.gather(3, index);
    const at::Tensor sums = fused ? spe::ops::sum_relative_buckets(weights, clip)
                                  : at::zeros({B, H, n, buckets}).scatter_add(3, index, weights);
    torch::autograd::backward({logits, sums}, {grad_logits, grad_sums});
  }
  // four passes over a (B, H, N, N) float tensor: each direction and, in the backward, its adjoint
  const double bytes = 4.0 * B * H * n * n * sizeof(float);
  state.counters["GB/s"] = benchmark::Counter(bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(causal, fused, true)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(causal, quadratic, false)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(sine, fused, true)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(sine, materialised, false)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(separable, fused, true, false)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(separable, materialised, false, false)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(separable, causal_fused, true, true)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(separable, causal_materialised, false, true)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(correlation, fused, true)->Arg(2048)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(correlation, conv1d, false)->Arg(2048)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(relative_buckets, fused, true)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(relative_buckets, gather, false)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

// LibTorch starts with one intra-op thread: use every core, as `spe --threads` does by default.
int main(int argc, char** argv) {
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
