// `spe data`, `spe train`, `spe eval`, `spe config`, `spe plot` and `spe kernel --checkpoint` as a
// user runs them, including a
// training process killed at random moments (often in the middle of writing a checkpoint) and
// resumed from whatever is on disk.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "spe/inference/saved_model.h"
#include "support/cli.h"

namespace spe {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;
using testing::scratch;

const std::string kTinyModel =
    " --set model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32 model.positional.realizations=8"
    " model.positional.sines=2 train.batch_size=4 train.warmup_steps=2 train.log_every=1 ";

fs::path listops_data() { return testing::small_listops("listops", 3); }

nlohmann::json last_json_line(const std::string& output) {
  std::istringstream in(output);
  nlohmann::json last;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') last = nlohmann::json::parse(line);
  return last;
}

TEST(CliTrain, DataTrainEvalAndPlotWorkTogether) {
  const fs::path data = listops_data(), out = scratch("run");
  const auto lines = run_cli("data listops --out " + scratch("listops_again").string() +
                             " --train 64 --valid 16 --test 16 --min-length 20 --max-length 60 --max-depth 4 --seed 3");
  ASSERT_EQ(lines.status, 0) << lines.output;
  EXPECT_NE(lines.output.find("\"split\": \"train\", "), std::string::npos);
  const auto train = run_cli("--threads 1 train --config " SPE_SOURCE_DIR "/configs/listops/linear_sine_spe.yaml" + kTinyModel +
                             "train.steps=6 train.eval_every=3 data.dir=" + data.string() + " --out " + out.string());
  ASSERT_EQ(train.status, 0) << train.output;
  for (const char* file : {"config.yaml", "metrics.jsonl", "checkpoint.pt", "best.pt"})
    EXPECT_TRUE(fs::exists(out / file)) << file;
  const auto eval = run_cli("eval --checkpoint " + (out / "checkpoint.pt").string() + " --split test");
  ASSERT_EQ(eval.status, 0) << eval.output;
  const nlohmann::json result = last_json_line(eval.output);
  EXPECT_EQ(result["step"], 6);
  EXPECT_EQ(result["predictions"], 16);
  EXPECT_GE(result["accuracy"].get<double>(), 0.0);
  const auto plot = run_cli("plot --metrics " + (out / "metrics.jsonl").string() + " --png " + (out / "curves.png").string());
  ASSERT_EQ(plot.status, 0) << plot.output;
  EXPECT_GT(fs::file_size(out / "curves.png"), 1000u);
}

// `spe compare` with --first-seed runs only the seeds asked (a grid split across processes), says
// which in its table, and on a second call takes the finished runs from their summaries.
TEST(CliTrain, CompareRunsTheSeedsAskedAndKeepsFinishedRuns) {
  const fs::path data = listops_data(), out = scratch("compare");
  const std::string grid = "--threads 1 compare --task listops --config " SPE_SOURCE_DIR
                           "/configs/listops/compare.yaml --pe none --out " + out.string() + kTinyModel +
                           "train.steps=2 train.eval_every=2 data.dir=" + data.string();
  const auto first = run_cli(grid + " --seeds 3 --first-seed 2");
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_FALSE(fs::exists(out / "linear-none-seed1"));
  for (const char* run : {"linear-none-seed2", "linear-none-seed3"}) EXPECT_TRUE(fs::exists(out / run / "summary.json")) << run;
  EXPECT_NE(first.output.find("Task `listops`; seeds 2-3 per row"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("--seeds 3 --first-seed 2"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find(" ± "), std::string::npos) << first.output;
  const auto again = run_cli(grid + " --seeds 3 --first-seed 3");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("linear-none-seed3: complete, not run again"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("seed 3 per row"), std::string::npos) << again.output;
  const auto beyond = run_cli(grid + " --seeds 2 --first-seed 3");
  EXPECT_NE(beyond.status, 0);
  EXPECT_NE(beyond.output.find("--first-seed is 3, beyond --seeds 2: no seed would run"), std::string::npos) << beyond.output;
}

// `spe kernel --checkpoint`: the kernel of a trained layer, from its own parameters (those the
// checkpoint holds), with the kind and sizes of its model.
TEST(CliTrain, KernelOfATrainedLayerUsesItsParameters) {
  const fs::path data = listops_data(), out = scratch("kernel_run"), json = scratch("trained_kernel.json");
  const auto train = run_cli("--threads 1 train --config " SPE_SOURCE_DIR "/configs/listops/linear_sine_spe.yaml" + kTinyModel +
                             "train.steps=3 train.eval_every=3 model.positional.gate_mean=-3 data.dir=" + data.string() +
                             " --out " + out.string());
  ASSERT_EQ(train.status, 0) << train.output;
  const std::string checkpoint = (out / "checkpoint.pt").string();
  const auto run = run_cli("kernel --checkpoint " + checkpoint + " --length 9 --json " + json.string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("sineSPE (trained, layer 0, gated)"), std::string::npos) << run.output;
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["pe"], "sine");
  EXPECT_EQ(j["checkpoint"], checkpoint);
  EXPECT_EQ(j["heads"], 2);
  EXPECT_EQ(j["dim"], 8);
  EXPECT_EQ(j["realizations"], 8);
  EXPECT_EQ(j["sines"], 2);
  // The parameters shown are the trained model's: its first layer's gate, the shared code's gains.
  inference::SavedModel saved = inference::load_saved_model(checkpoint);
  auto& layer = *saved.model->transformer->blocks[0]->as<nn::TransformerBlock>()->attention;
  auto& sine = *saved.model->transformer->sine_spe;
  double lambda_sum = 0;  // (1 / 2K) sum_k lambda_k^2 cos(theta_k) at lag 0, head 1, feature 3
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(j["params"]["gains"][1][3][k].get<double>(), sine.gains[1][3][k].item<double>());
    const double lambda = std::log1p(std::exp(sine.gains[1][3][k].item<double>()));
    lambda_sum += lambda * lambda * std::cos(sine.offsets[1][3][k].item<double>()) / 4;
  }
  const double gate = layer.spe_filter->gate[1][3].item<double>(), s = 1 / (1 + std::exp(-gate));
  EXPECT_EQ(j["params"]["gate"][1][3].get<double>(), gate);
  EXPECT_NEAR(j["expected"][1][3][8].get<double>(), ((1 - s) * lambda_sum + s) * std::sqrt(8.0 / 8.0), 1e-6);
  // Mistakes are named.
  auto fails_with = [](const std::string& arguments, const std::string& expected) {
    const auto bad = run_cli(arguments);
    EXPECT_NE(bad.status, 0) << arguments;
    EXPECT_NE(bad.output.find(expected), std::string::npos) << arguments << "\n" << bad.output;
  };
  fails_with("kernel --checkpoint " + checkpoint + " --length 9 --layer 1", "--layer: the model has 1 layer(s), 0 to 0; got 1");
  fails_with("kernel --checkpoint " + checkpoint + " --length 9 --pe sine",
             "--pe: comes from the checkpoint: do not combine it with --checkpoint");
  fails_with("kernel --pe decay --heads 2 --length 9 --layer 0", "--layer: applies to --checkpoint only");
  fails_with("kernel --length 9", "--pe is required (or --checkpoint, whose model gives it)");
  fails_with("kernel --checkpoint " + scratch("nothing.pt").string() + " --length 9", "nothing.pt");
  const fs::path plain = scratch("kernel_plain_run");
  ASSERT_EQ(run_cli("--threads 1 train --config " SPE_SOURCE_DIR "/configs/listops/linear_sine_spe.yaml" + kTinyModel +
                    "train.steps=1 train.eval_every=1 model.positional.kind=rotary data.dir=" + data.string() + " --out " +
                    plain.string())
                .status,
            0);
  fails_with("kernel --checkpoint " + (plain / "checkpoint.pt").string() + " --length 9",
             "its positional kind is rotary; spe kernel --checkpoint shows the learned relative ones");
}

TEST(CliTrain, MistakesAreNamed) {
  const fs::path data = listops_data();
  auto fails_with = [](const std::string& arguments, const std::string& expected) {
    const auto run = run_cli(arguments);
    EXPECT_EQ(run.status, 1) << arguments << "\n" << run.output;
    EXPECT_NE(run.output.find(expected), std::string::npos) << arguments << "\n" << run.output;
  };
  fails_with("train --set model.layer=2 --out " + scratch("x").string(), "unknown key 'model.layer'");
  fails_with("train --set data.dir=/nonexistent --out " + scratch("y").string(),
             "no train split at '/nonexistent/train.bin': data.dir ('/nonexistent') holds no prepared listops data");
  fails_with("config --config /nonexistent.yaml", "cannot open '/nonexistent.yaml'");
  fails_with("eval --checkpoint " + (data / "train.bin").string(), "is not an spe checkpoint");
  fails_with("train --resume --out " + scratch("never_trained").string(), "config.yaml");
  fails_with("data listops --out " + scratch("z").string() + " --min-length 10 --max-length 5", "length range [10, 5]");
  const auto ok = run_cli("config --set model.positional.kind=rotary");
  EXPECT_EQ(ok.status, 0);
  EXPECT_NE(ok.output.find("kind: rotary"), std::string::npos) << ok.output;
}

// Every probe from the command line into the probe configs, with the new positional options; bad
// probe options and inconsistent positional options are refused with their names.
TEST(CliTrain, ProbesTrainWithTheirConfigs) {
  for (const char* kind : {"order", "offset", "retrieval"}) {
    SCOPED_TRACE(kind);
    const fs::path data = scratch(std::string("probe_") + kind), out = scratch(std::string("probe_run_") + kind);
    const auto made = run_cli(std::string("data probe --kind ") + kind + " --length 24 --train 32 --valid 8 --test 8 --out " +
                              data.string());
    ASSERT_EQ(made.status, 0) << made.output;
    EXPECT_NE(made.output.find("\"chance\": "), std::string::npos) << made.output;
    const auto train = run_cli(std::string("--threads 1 train --config " SPE_SOURCE_DIR "/configs/probe/") + kind +
                               ".yaml" + kTinyModel +
                               "model.positional.kind=sine_spe model.positional.place=features "
                               "model.positional.code=exact model.positional.init=spread train.steps=3 train.eval_every=3 "
                               "data.max_length=24 data.dir=" + data.string() + " --out " + out.string());
    ASSERT_EQ(train.status, 0) << train.output;
    EXPECT_TRUE(fs::exists(out / "best.pt"));
  }
  auto fails_with = [](const std::string& arguments, const std::string& expected) {
    const auto run = run_cli(arguments);
    EXPECT_NE(run.status, 0) << arguments << "\n" << run.output;
    EXPECT_NE(run.output.find(expected), std::string::npos) << arguments << "\n" << run.output;
  };
  // `code` is sineSPE's, like `sines`: a grid's base config with code exact still runs convSPE (sampled).
  const auto conv = run_cli("config --config " SPE_SOURCE_DIR "/configs/text/compare.yaml --set model.positional.kind=conv_spe");
  EXPECT_EQ(conv.status, 0) << conv.output;
  EXPECT_NE(conv.output.find("kind: conv_spe"), std::string::npos) << conv.output;
  fails_with("data probe --kind offset --length 3 --out " + scratch("short").string(),
             "probe offset: length is 3, expected 5 to 65535");
  fails_with("data probe --kind sideways", "--kind: 'sideways' is not one of: order, offset, retrieval");
  fails_with("config --set model.positional.kind=sine_spe model.positional.code=exact",
             "exact sineSPE under a feature map needs place features");
  fails_with("config --set model.positional.gate_mean=.inf", "gate_mean is inf, expected a finite number");
  fails_with("config --set model.positional.place=somewhere", "'somewhere' is not one of: inputs, features");
}

// Kills training at random moments after checkpoints start appearing (with a checkpoint every
// step, many kills land inside a write), then checks that what is on disk always loads and that
// --resume always finishes the run.
TEST(CliTrain, KilledRunsResumeFromWhatIsOnDisk) {
  const fs::path data = listops_data(), out = scratch("killed");
  const std::string train_args = std::string(SPE_CLI) + " --threads 1 train" + kTinyModel +
                                 "train.steps=400 train.checkpoint_every=1 train.eval_every=1000 data.dir=" + data.string() +
                                 " --no-progress --out " + out.string();
  std::mt19937 rng(7);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string command = train_args + (attempt > 0 ? " --resume" : "") + " > /dev/null 2>&1";
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto checkpoint = out / "checkpoint.pt";
    const auto before = fs::exists(checkpoint) ? fs::last_write_time(checkpoint) : fs::file_time_type::min();
    for (int wait = 0; wait < 600 && (!fs::exists(checkpoint) || fs::last_write_time(checkpoint) == before); ++wait)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it was killed; make it longer";
    const auto eval = run_cli("eval --batches 1 --checkpoint " + checkpoint.string());
    ASSERT_EQ(eval.status, 0) << "after kill " << attempt << ": " << eval.output;
  }
  const auto resumed = run_cli(train_args.substr(std::string(SPE_CLI).size()) + " --resume");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  const auto eval = run_cli("eval --batches 1 --checkpoint " + (out / "checkpoint.pt").string());
  EXPECT_EQ(last_json_line(eval.output)["step"], 400) << eval.output;
}

}  // namespace
}  // namespace spe
