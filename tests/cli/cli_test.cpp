// The `spe` command line, run as a user runs it: outputs checked against formulas recomputed here
// from the parameters it reports, and bad arguments checked for a message that names them.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "spe/encoding/sine_spe.h"
#include "support/cli.h"

namespace spe {
namespace {

namespace fs = std::filesystem;

using testing::CliRun;
using testing::run_cli;
using testing::scratch;

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

TEST(CliKernel, SineJsonHoldsTheExactGatedKernelOfItsParameters) {
  const fs::path json = scratch("sine.json"), png = scratch("sine.png");
  CliRun run = run_cli("kernel --pe sine --heads 2 --dim 3 --length 20 --realizations 16 --sines 4 --gated --seed 5 --json " +
                    json.string() + " --png " + png.string());
  ASSERT_EQ(run.status, 0) << run.output;
  nlohmann::json j = read_json(json);
  EXPECT_EQ(j["pe"], "sine");
  EXPECT_EQ(j["heads"], 2);
  EXPECT_EQ(j["dim"], 3);
  EXPECT_EQ(j["length"], 20);
  EXPECT_EQ(j["realizations"], 16);
  EXPECT_EQ(j["gated"], true);
  ASSERT_EQ(j["lags"].size(), 39u);
  EXPECT_EQ(j["lags"][0], -19);
  EXPECT_EQ(j["lags"][38], 19);
  const auto& p = j["params"];
  const double R = 16, D = 3, K = 4;
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < 3; ++d) {
      const double s = sigmoid(p["gate"][h][d].get<double>());
      for (int i = 0; i < 39; ++i) {
        const double lag = j["lags"][i].get<double>();
        double sum = 0;
        for (int k = 0; k < K; ++k) {
          const double f = sigmoid(p["freqs"][h][d][k].get<double>()) / 2;
          const double lambda = std::log1p(std::exp(p["gains"][h][d][k].get<double>()));
          sum += lambda * lambda * std::cos(2 * M_PI * f * lag + p["offsets"][h][d][k].get<double>());
        }
        const double exact = (1 - s) * std::sqrt(R / D) * sum / (2 * K) + s * std::sqrt(R / D);
        EXPECT_NEAR(j["expected"][h][d][i].get<double>(), exact, 1e-12);
        EXPECT_TRUE(std::isfinite(j["empirical"][h][d][i].get<double>()));
      }
    }
  // the parameters are those the seed draws, exactly: freqs with the -4 shift already in it
  at::manual_seed(5);
  SineSPE spe(SineSPEOptions(2, 3).sines(4));
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < 3; ++d)
      for (int k = 0; k < 4; ++k)
        EXPECT_EQ(p["freqs"][h][d][k].get<double>(), spe->freqs[h][d][k].item<double>());
  EXPECT_EQ(slurp(png).substr(0, 4), "\x89PNG");
  // the same seed gives the same file
  const fs::path again = scratch("again.json");
  ASSERT_EQ(run_cli("kernel --pe sine --heads 2 --dim 3 --length 20 --realizations 16 --sines 4 --gated --seed 5 --json " + again.string()).status, 0);
  EXPECT_EQ(slurp(json), slurp(again));
}

TEST(CliKernel, ConvJsonHoldsTheExactKernelOfItsFilters) {
  const fs::path json = scratch("conv.json");
  CliRun run = run_cli("kernel --pe conv --heads 1 --dim 2 --length 12 --realizations 8 --kernel-size 5 --seed 3 --dtype float32 --json " + json.string());
  ASSERT_EQ(run.status, 0) << run.output;
  nlohmann::json j = read_json(json);
  const auto& a = j["params"]["weight_q"];
  const auto& b = j["params"]["weight_k"];
  ASSERT_EQ(a[0][0].size(), 5u);
  EXPECT_FALSE(j["params"].contains("gate"));
  for (int d = 0; d < 2; ++d)
    for (int lag = -11; lag <= 11; ++lag) {
      double sum = 0;
      for (int i = 0; i < 5; ++i)
        if (i + lag >= 0 && i + lag < 5) sum += a[0][d][i].get<double>() * b[0][d][i + lag].get<double>();
      EXPECT_NEAR(j["expected"][0][d][lag + 11].get<double>(), std::sqrt(8.0 / 2.0) * sum, 1e-6);
    }
}

// The logit the Decay module starts head h of H at: g = 1 - 2^-(5 + 7 h / (H - 1)), stored as float32.
double starting_decay_logit(int h, int heads) {
  const double g = 1 - std::pow(2.0, -(5 + 7.0 * h / (heads - 1)));
  return static_cast<float>(std::log(g / (1 - g)));
}

TEST(CliKernel, DecayJsonIsEachHeadsDecayToTheLag) {
  const fs::path json = scratch("decay.json"), causal = scratch("decay_causal.json"), png = scratch("decay.png");
  CliRun run = run_cli("kernel --pe decay --heads 3 --length 40 --json " + json.string() + " --png " + png.string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("decay: H=3 L=40: exact kernel at lags 0, 1, 39: head 0: 1 0.9687 0.2899 | "
                            "head 1: 1 0.9972 0.8977 | head 2: 1 0.9998 0.9905"),
            std::string::npos) << run.output;
  EXPECT_EQ(slurp(png).substr(0, 4), "\x89PNG");
  ASSERT_EQ(run_cli("kernel --pe decay --heads 3 --length 40 --causal --json " + causal.string()).status, 0);
  const nlohmann::json j = read_json(json), c = read_json(causal);
  EXPECT_EQ(j["pe"], "decay");
  EXPECT_EQ(j["axes"], nlohmann::json({"head", "lag"}));
  EXPECT_FALSE(j.contains("empirical"));
  EXPECT_FALSE(j.contains("dim"));
  EXPECT_EQ(c["causal"], true);
  ASSERT_EQ(j["lags"].size(), 79u);
  ASSERT_EQ(j["expected"].size(), 3u);
  for (int h = 0; h < 3; ++h) {
    const double logit = j["params"]["logits"][h].get<double>();
    EXPECT_NEAR(logit, starting_decay_logit(h, 3), 1e-6 * std::abs(logit)) << h;
    const double g = sigmoid(logit);
    for (int i = 0; i < 79; ++i) {
      const int lag = j["lags"][i].get<int>();
      const double exact = std::pow(g, std::abs(lag));
      EXPECT_NEAR(j["expected"][h][i].get<double>(), exact, 1e-12 * exact) << h << " " << lag;
      EXPECT_EQ(c["expected"][h][i].get<double>(), lag < 0 ? 0.0 : j["expected"][h][i].get<double>()) << lag;
    }
  }
}

TEST(CliKernel, ToeplitzJsonIsTheExponentialOfTheClippedBias) {
  const fs::path json = scratch("toeplitz.json");
  CliRun run = run_cli("kernel --pe toeplitz --heads 2 --length 12 --clip 3 --dtype float32 --json " + json.string());
  ASSERT_EQ(run.status, 0) << run.output;
  const nlohmann::json j = read_json(json);
  EXPECT_EQ(j["clip"], 3);
  EXPECT_FALSE(j.contains("empirical"));
  const auto& bias = j["params"]["bias"];
  ASSERT_EQ(bias.size(), 2u);
  ASSERT_EQ(bias[0].size(), 7u);  // lags -3 .. 3
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 23; ++i) {
      const int lag = j["lags"][i].get<int>();
      EXPECT_EQ(bias[h][std::clamp(lag, -3, 3) + 3].get<double>(), 0.0);  // the module starts at b = 0
      EXPECT_NEAR(j["expected"][h][i].get<double>(), std::exp(bias[h][std::clamp(lag, -3, 3) + 3].get<double>()), 1e-7);
    }
}

// theta_i after each scaling of include/spe/encoding/rotary.h, written out again here.
double scaled_frequency(const std::string& scaling, int i, int dim, double base, double s, int original_length) {
  if (scaling == "ntk") base *= std::pow(s, dim / (dim - 2.0));
  const double theta = std::pow(base, -2.0 * i / dim);
  if (scaling == "linear") return theta / s;
  if (scaling != "yarn") return theta;
  const double kept = std::clamp((original_length * theta / (2 * M_PI) - 1) / 31, 0.0, 1.0);
  return (1 - kept) * theta / s + kept * theta;
}

TEST(CliKernel, RotaryJsonIsTheMeanCosineOfItsFrequencies) {
  for (const std::string scaling : {"none", "linear", "ntk", "yarn"}) {
    const fs::path json = scratch("rotary_" + scaling + ".json");
    std::string options = "--rope-scaling " + scaling;
    if (scaling != "none") options += " --factor 4";
    if (scaling == "yarn") options += " --original-length 32";
    CliRun run = run_cli("kernel --pe rotary --heads 2 --dim 8 --length 24 --base 100 " + options + " --json " +
                         json.string());
    ASSERT_EQ(run.status, 0) << run.output;
    const nlohmann::json j = read_json(json);
    EXPECT_EQ(j["rope_scaling"], scaling);
    EXPECT_FALSE(j.contains("empirical"));
    EXPECT_TRUE(j["params"].empty());
    const double s = scaling == "none" ? 1 : 4, magnitude = scaling == "yarn" ? 0.1 * std::log(s) + 1 : 1;
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(j["frequencies"][i].get<double>(), scaled_frequency(scaling, i, 8, 100, s, 32), 1e-15) << scaling;
    ASSERT_EQ(j["expected"].size(), 2u);
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 47; ++l) {
        const int lag = j["lags"][l].get<int>();
        double mean = 0;
        for (int i = 0; i < 4; ++i) mean += std::cos(scaled_frequency(scaling, i, 8, 100, s, 32) * lag) / 4;
        EXPECT_NEAR(j["expected"][h][l].get<double>(), magnitude * magnitude * mean, 1e-12) << scaling << " " << lag;
      }
  }
}

TEST(CliKernel, BadArgumentsAreNamed) {
  const std::string base = "kernel --heads 2 --dim 2 --length 16 --realizations 4 --seed 1 ";
  auto expect_error = [](const CliRun& run, const std::string& message) {
    EXPECT_NE(run.status, 0);
    EXPECT_NE(run.output.find(message), std::string::npos) << run.output;
  };
  expect_error(run_cli(base + "--pe fourier"), "--pe: fourier not in {sine,conv,decay,toeplitz,rotary}");
  expect_error(run_cli("kernel --pe sine --heads 0 --dim 2 --length 16 --realizations 4 --seed 1"), "--heads: must be a positive integer, got 0");
  expect_error(run_cli("kernel --pe sine --heads 2 --dim 2 --length 16 --realizations -4 --seed 1"), "--realizations");
  expect_error(run_cli(base + "--pe sine --sines 0"), "--sines: must be a positive integer, got 0");
  expect_error(run_cli(base + "--pe conv --kernel-size 40"), "--kernel-size: 40 is longer than --length 16");
  expect_error(run_cli(base + "--pe conv --sines 3"), "--sines: applies to --pe sine only");
  expect_error(run_cli(base + "--pe sine --kernel-size 3"), "--kernel-size: applies to --pe conv only");
  expect_error(run_cli("kernel --pe sine --heads 2 --dim 2 --length 16 --realizations 4"), "--seed is required");
  expect_error(run_cli(base + "--pe sine --dtype float16"), "--dtype: float16 not in {float32,float64}");
  expect_error(run_cli(base + "--pe sine --json /nonexistent-dir/k.json"), "error: cannot create '/nonexistent-dir/k.json.tmp");
  CliRun png = run_cli(base + "--pe sine --png /nonexistent-dir/k.png");
  expect_error(png, "error: cannot write '/nonexistent-dir/k.png'");
  EXPECT_EQ(png.output.find("PNG"), std::string::npos) << "image bytes leaked to the terminal";
  expect_error(run_cli(base + "--pe sine --realizations 2x"), "--realizations: must be a positive integer, got 2x");
  expect_error(run_cli("frobnicate"), "frobnicate");
  expect_error(run_cli("kernel --pe sine --heads 8 --dim 64 --length 100000 --realizations 64 --seed 1"),
               "--length: L^2 H D R = 3.28e+14 multiply-adds for the empirical kernel exceeds the limit");
  expect_error(run_cli("kernel --pe sine --heads 2 --dim 2 --length 16 --seed 1"), "--realizations is required for --pe sine");
  const std::string exact = "kernel --heads 2 --length 16 ";
  expect_error(run_cli(exact + "--pe decay --seed 1"), "--seed: applies to --pe sine, conv only, not --pe decay");
  expect_error(run_cli(exact + "--pe decay --dim 4"), "--dim: applies to --pe sine, conv, rotary only, not --pe decay");
  expect_error(run_cli(exact + "--pe decay --clip 3"), "--clip: applies to --pe toeplitz only, not --pe decay");
  expect_error(run_cli(exact + "--pe toeplitz --clip 0"), "--clip: must be a positive integer, got 0");
  expect_error(run_cli("kernel --pe decay --heads 1000 --length 100000"),
               "--length: H (2L - 1) = 2e+08 values for the exact kernel exceeds the limit of 2e+07");
  expect_error(run_cli(exact + "--pe rotary"), "--dim is required for --pe rotary");
  expect_error(run_cli(exact + "--pe rotary --dim 5"), "--dim: rotary turns features in pairs: must be even, got 5");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --base 1"), "--base: must be finite and > 1");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --base 1e"), "Could not convert: --base = 1e");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling cubic"), "--rope-scaling: cubic not in {none,linear,ntk,yarn}");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling linear"), "--factor is required with --rope-scaling linear");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --factor 2"), "--factor: applies to --rope-scaling linear, ntk or yarn, not none");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling linear --factor 0.5"),
               "--factor: must be a number in [1, 1000000], got 0.5");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling linear --factor nan"),
               "--factor: must be a number in [1, 1000000], got nan");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling yarn --factor 4"),
               "--original-length is required with --rope-scaling yarn");
  expect_error(run_cli(exact + "--pe rotary --dim 8 --rope-scaling ntk --factor 4 --original-length 8"),
               "--original-length: applies to --rope-scaling yarn only, not ntk");
  expect_error(run_cli(exact + "--pe rotary --dim 2 --rope-scaling ntk --factor 4"), "--dim: ntk scaling needs at least 4 features, got 2");
  expect_error(run_cli("kernel --pe rotary --heads 2 --dim 1000 --length 100000"),
               "--length: max(H (2L - 1), L D) = 1e+08 values for the exact kernel exceeds the limit");
}

TEST(CliKernel, HelpSaysWhatEachKindShows) {
  CliRun help = run_cli("kernel --help");
  EXPECT_EQ(help.status, 0);
  for (const char* part : {"decay, toeplitz and rotary exact", "g_h^|m - n|", "exp(b_h(clamp(m - n, -clip, clip)))",
                           "mean over pairs i of cos(theta_i (m - n))", "--rope-scaling", "--causal"})
    EXPECT_NE(help.output.find(part), std::string::npos) << part << "\n" << help.output;
}

// Every line of a `spe bench` run is a JSON object; returns them.
std::vector<nlohmann::json> json_lines(const std::string& output) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(CliBench, EveryScenarioReportsItsMeasurements) {
  CliRun causal = run_cli("bench causal --batch 1 --heads 2 --length 96 --dim 8 --value-dim 8 --chunk 32 --repeats 1");
  ASSERT_EQ(causal.status, 0) << causal.output;
  auto lines = json_lines(causal.output);
  ASSERT_EQ(lines.size(), 3u) << causal.output;
  EXPECT_EQ(lines[0]["impl"], "fused");
  EXPECT_EQ(lines[0]["fused_speedup"], 1);
  EXPECT_EQ(lines[1]["impl"], "decayed");
  EXPECT_EQ(lines[2]["impl"], "quadratic");
  for (const auto& l : lines) {
    EXPECT_GT(l["forward_s"].get<double>(), 0);
    EXPECT_GT(l["gemm_gflops"].get<double>(), 0);
    EXPECT_EQ(l["N"], 96);
  }
  CliRun sine = run_cli("bench sine --batch 1 --heads 2 --length 40 --dim 4 --realizations 8 --sines 2 --repeats 1");
  ASSERT_EQ(sine.status, 0) << sine.output;
  lines = json_lines(sine.output);
  ASSERT_EQ(lines.size(), 2u) << sine.output;
  EXPECT_EQ(lines[1]["impl"], "materialised");
  EXPECT_NEAR(lines[0]["fused_gflop_forward"].get<double>(), 2.0 * 40 * 2 * (4 * 4 * 2 * 8 + 2 * 1 * 4 * 8) / 1e9, 1e-9);
  const fs::path png = scratch("decode.png");
  CliRun decode = run_cli("bench decode --heads 2 --dim 4 --realizations 8 --positions 50 --window 20 --png " + png.string());
  ASSERT_EQ(decode.status, 0) << decode.output;
  lines = json_lines(decode.output);
  ASSERT_EQ(lines.size(), 3u) << decode.output;  // windows starting at 0, 20, 40
  EXPECT_EQ(lines[2]["first_position"], 40);
  EXPECT_EQ(slurp(png).substr(0, 4), "\x89PNG");
  CliRun layer = run_cli("bench layer --heads 2 --dim 4 --realizations 8 --length 16 32 --clip 4 --repeats 1");
  ASSERT_EQ(layer.status, 0) << layer.output;
  lines = json_lines(layer.output);
  ASSERT_EQ(lines.size(), 5u) << layer.output;
  EXPECT_TRUE(lines.back().contains("crossover_length"));
  CliRun every_layer = run_cli(
      "bench layer --heads 2 --dim 4 --length 16 --clip 4 --repeats 1 --bidirectional --layers linear linear+decay "
      "linear+toeplitz softmax+shaw");
  ASSERT_EQ(every_layer.status, 0) << every_layer.output;
  lines = json_lines(every_layer.output);
  ASSERT_EQ(lines.size(), 7u) << every_layer.output;  // four layers at N = 16, a crossover for each linear one
  EXPECT_EQ(lines[2]["impl"], "linear+toeplitz");
  EXPECT_EQ(lines[2]["causal"], false);
  EXPECT_GT(lines[2]["forward_backward_s"].get<double>(), 0.0);
  EXPECT_EQ(lines[6]["impl"], "linear+toeplitz");
  CliRun unknown_layer = run_cli("bench layer --layers linear+nothing --length 16");
  EXPECT_NE(unknown_layer.status, 0);
  EXPECT_NE(unknown_layer.output.find("linear+nothing"), std::string::npos) << unknown_layer.output;
  CliRun conv = run_cli("bench conv --ndim 2 --length 6 --kernel-size 2 3 --heads 1 --dim 2 --realizations 2 --repeats 1");
  ASSERT_EQ(conv.status, 0) << conv.output;
  lines = json_lines(conv.output);
  ASSERT_EQ(lines.size(), 4u) << conv.output;  // (direct, fft) for each size
  EXPECT_EQ(lines[3]["algorithm"], "fft");
  EXPECT_EQ(lines[3]["S"], 3);
  EXPECT_GT(lines[3]["forward_backward_s"].get<double>(), 0.0);  // a code and its filters' gradients
  CliRun generate = run_cli("bench generate --config " SPE_SOURCE_DIR "/configs/music/lm.yaml --vocab 16 --positions 20 "
                             "--window 10 --prefix-positions 5 --repeats 1");
  ASSERT_EQ(generate.status, 0) << generate.output;
  lines = json_lines(generate.output);
  // two windows of each decoder (the music model is covered by the fused one), one prefix step, the summaries
  ASSERT_EQ(lines.size(), 7u) << generate.output;
  EXPECT_EQ(lines[0]["decoder"], "recurrent");
  EXPECT_EQ(lines[2]["decoder"], "fused");
  EXPECT_EQ(lines[4]["decoder"], "prefix");
  EXPECT_GT(lines[4]["fused_speedup"].get<double>(), 0.0);
  EXPECT_EQ(lines[6]["decoder"], "fused");
  EXPECT_GT(lines[6]["gemv_bound_ms_per_token"].get<double>(), 0.0);
  EXPECT_GT(lines[6]["median_over_bound"].get<double>(), 0.0);
  CliRun bad = run_cli("bench causal --chunk 0");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--chunk"), std::string::npos) << bad.output;
}

// `spe bench train`: whole steps of a language model (causal, next-token loss), a classifier and a
// dual encoder (two sequences per example), each line naming the model, its throughput and its
// memory (gradients and AdamW's state against the parameter count).
TEST(CliBench, TrainStepsOfALanguageModelAClassifierAndADualEncoder) {
  // The one JSON line of a tiny model of this config's kind (B 2, N 24).
  auto tiny_step = [](const std::string& config, const std::string& extra = "") {
    CliRun run = run_cli("--threads 1 bench train --config " SPE_SOURCE_DIR "/configs/" + config +
                         " --set model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32 "
                         "model.positional.realizations=8 --batch 2 --length 24 --vocab 20 --repeats 2" + extra);
    EXPECT_EQ(run.status, 0) << run.output;
    const auto lines = json_lines(run.output);
    EXPECT_EQ(lines.size(), 1u) << run.output;
    return lines.empty() ? nlohmann::json::object() : lines[0];
  };
  auto tokens_per_step = [](const nlohmann::json& line) {
    return line["tokens_per_s"].get<double>() * line["median_step_s"].get<double>();
  };
  const nlohmann::json lm = tiny_step("music/lm.yaml");
  ASSERT_FALSE(lm.empty());
  EXPECT_EQ(lm["model"], "language_model");
  EXPECT_EQ(lm["positional"], "sine_spe");
  EXPECT_EQ(lm["causal"], true);
  EXPECT_EQ(lm["N"], 24);
  EXPECT_GT(lm["parameters"].get<int64_t>(), 0);
  EXPECT_GE(lm["first_step_peak_mib"].get<double>(), 0.0);
  EXPECT_NEAR(tokens_per_step(lm), 2 * 24, 0.5);
  // a gradient per parameter, AdamW's two moments per parameter; what the forward keeps is measured
  const double parameters_mib = lm["parameters"].get<double>() * 4 / (1 << 20);
  EXPECT_NEAR(lm["parameters_mib"].get<double>(), parameters_mib, 0.051);
  EXPECT_NEAR(lm["gradients_mib"].get<double>(), parameters_mib, 0.051);
  EXPECT_NEAR(lm["optimizer_state_mib"].get<double>(), 2 * parameters_mib, 0.051);
  EXPECT_GE(lm["kept_for_backward_mib"].get<double>(), 0.0);
  const nlohmann::json classifier = tiny_step("text/compare.yaml", " --classes 3");
  ASSERT_FALSE(classifier.empty());
  EXPECT_EQ(classifier["model"], "classifier");
  EXPECT_EQ(classifier["causal"], false);
  const nlohmann::json pairs = tiny_step("retrieval/compare.yaml", " --classes 2");
  ASSERT_FALSE(pairs.empty());
  EXPECT_EQ(pairs["model"], "dual_encoder");
  EXPECT_NEAR(tokens_per_step(pairs), 2 * 2 * 24, 0.5);
  // 2-D convSPE needs the sequences' grid: --grid gives random tokens one
  const std::string image = "--threads 1 bench train --config " SPE_SOURCE_DIR "/configs/image/compare.yaml"
                            " --set model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32 "
                            "model.positional.realizations=8 model.positional.kind=conv_spe model.positional.conv_ndim=2 "
                            "model.positional.kernel_size=3 model.pooling=mean --batch 2 --length 24 --vocab 20 --repeats 2";
  CliRun no_grid = run_cli(image);
  EXPECT_NE(no_grid.status, 0);
  EXPECT_NE(no_grid.output.find("--grid ROWS COLUMNS"), std::string::npos) << no_grid.output;
  CliRun grid = run_cli(image + " --grid 4 6");
  ASSERT_EQ(grid.status, 0) << grid.output;
  EXPECT_EQ(json_lines(grid.output).at(0)["positional"], "conv_spe");
  CliRun small_grid = run_cli(image + " --grid 4 5");
  EXPECT_NE(small_grid.status, 0);
  EXPECT_NE(small_grid.output.find("does not fit the 4 x 5 grid"), std::string::npos) << small_grid.output;
}

TEST(CliInfo, ReportsVersionsBlasThreadsAndGemmRate) {
  CliRun run = run_cli("--threads 1 info --gemm-size 128");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* part : {"spe ", "LibTorch ", "threads: intra-op 1", "BLAS libraries loaded", "GEMM float32 128^3", "GFLOP/s"})
    EXPECT_NE(run.output.find(part), std::string::npos) << part << "\n" << run.output;
  CliRun help = run_cli("--help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("kernel"), std::string::npos);
}

}  // namespace
}  // namespace spe
