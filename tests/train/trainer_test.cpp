// Training: a model learns a task it can learn; resuming is bit-exact; a diverging run stops with
// the step named and the last good checkpoint intact; checkpoints refuse damage and other models;
// evaluation is reproducible and leaves the RNG alone; the language-model loss skips padding.
#include "spe/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "spe/inference/saved_model.h"
#include "spe/train/checkpoint.h"
#include "spe/util/files.h"
#include "train/checkpoint_envelope.h"
#include "train/tensor_file.h"
#include "support/damage.h"
#include "support/errors.h"
#include "support/scratch.h"

namespace spe::train {
namespace {

namespace fs = std::filesystem;

using testing::fresh_folder;

// Majority vote: 9 tokens from {1, 2}; the label says which is more frequent.
data::Dataset majority(int64_t count, const std::string& split, uint64_t seed) {
  data::DatasetInfo info;
  info.task = "majority";
  info.split = split;
  info.vocab_size = 3;
  info.num_classes = 2;
  data::Dataset d(info);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < count; ++i) {
    std::vector<uint16_t> tokens;
    int twos = 0;
    for (int j = 0; j < 9; ++j) {
      tokens.push_back(static_cast<uint16_t>(1 + rng() % 2));
      twos += tokens.back() == 2;
    }
    d.add(twos > 4 ? 1 : 0, {tokens});
  }
  return d;
}

Config tiny_config(const fs::path& data_dir) {
  Config c = parse_config("", {"model.dim=16", "model.heads=2", "model.layers=1", "model.ffn_dim=32",
                               "model.positional.kind=sine_spe", "model.positional.realizations=8",
                               "model.positional.sines=2", "train.batch_size=8", "train.accumulation=2",
                               "train.warmup_steps=3", "train.eval_every=5", "train.checkpoint_every=4",
                               "train.log_every=2", "train.eval_batch_size=16"});
  c.data.dir = data_dir.string();
  return c;
}

fs::path majority_data(const std::string& name) {
  const fs::path dir = fresh_folder(name);
  majority(256, "train", 1).save(data::split_path(dir.string(), "train"));
  majority(64, "valid", 2).save(data::split_path(dir.string(), "valid"));
  return dir;
}

TrainerOptions run_in(const fs::path& out, bool resume = false, int64_t until_step = 0) {
  TrainerOptions options;
  options.out_dir = out.string();
  options.resume = resume;
  options.until_step = until_step;
  return options;
}

TEST(Trainer, LearnsMajorityVote) {
  at::set_num_threads(1);
  const fs::path data_dir = majority_data("learn_data"), out = fresh_folder("learn_run");
  Config c = tiny_config(data_dir);
  c.train.steps = 150;
  c.train.lr = 3e-3;
  c.train.eval_every = 150;
  train(c, run_in(out));
  nn::Model model = inference::build_model(c, majority(1, "valid", 2).info());
  load_checkpoint((out / "checkpoint.pt").string(), *model, nullptr, &c);
  const EvalResult r = evaluate(*model, data::Dataset::load(data::split_path(data_dir.string(), "valid")), 64, 16);
  // Chance is 0.5 (about 0.06 standard deviation on 64 examples); a working model is far above.
  EXPECT_GT(r.accuracy, 0.85) << "loss " << r.loss;
}

TEST(Trainer, ResumingContinuesBitForBit) {
  at::set_num_threads(1);
  const fs::path data_dir = majority_data("resume_data");
  Config c = tiny_config(data_dir);
  c.model.transformer().dropout(0.1);  // dropout draws from the RNG the checkpoint carries
  c.train.steps = 14;
  const fs::path straight = fresh_folder("straight"), split = fresh_folder("split");
  train(c, run_in(straight));
  const TrainSummary first_part = train(c, run_in(split, false, 5));
  const TrainingState after_first = read_checkpoint_header((split / "checkpoint.pt").string()).state;
  EXPECT_EQ(after_first.step, 5);
  EXPECT_GT(after_first.trained_seconds, 0.0);
  EXPECT_LE(after_first.trained_seconds, first_part.seconds);
  EXPECT_ERROR_CONTAINS(train(c, run_in(split)),
                        "'" + split.string() + "' already holds a run (checkpoint.pt); resume it or choose another "
                        "output folder");
  const TrainSummary whole = train(c, run_in(split, true));
  // The training time goes on from the first part's: the summary, the checkpoint, the metrics.
  EXPECT_GT(whole.seconds, after_first.trained_seconds);
  EXPECT_GT(read_checkpoint_header((split / "checkpoint.pt").string()).state.trained_seconds,
            after_first.trained_seconds);
  const data::DatasetInfo info = majority(1, "x", 1).info();
  nn::Model a = inference::build_model(c, info), b = inference::build_model(c, info);
  const CheckpointHeader ha = load_checkpoint((straight / "checkpoint.pt").string(), *a, nullptr, &c);
  const CheckpointHeader hb = load_checkpoint((split / "checkpoint.pt").string(), *b, nullptr, &c);
  EXPECT_EQ(ha.state.step, 14);
  EXPECT_EQ(hb.state.step, 14);
  EXPECT_EQ(ha.state.sampler.epoch, hb.state.sampler.epoch);
  EXPECT_EQ(ha.state.sampler.offset, hb.state.sampler.offset);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << p.key();
  // The resumed metrics hold each step once.
  std::ifstream metrics(split / "metrics.jsonl");
  int train_lines = 0;
  double elapsed = 0;
  for (std::string line; std::getline(metrics, line);) {
    train_lines += line.find("\"split\":\"train\"") != std::string::npos;
    const double now = nlohmann::json::parse(line).at("elapsed_s").get<double>();
    EXPECT_GE(now, elapsed) << line;  // never restarts from 0 at the resumed part
    elapsed = now;
  }
  EXPECT_EQ(train_lines, 14 / 2 + 1);  // every 2 steps, plus step 5 where the first part stopped
  // A recorded training time that is not a finite number >= 0 is refused by name.
  CheckpointHeader damaged = read_checkpoint_header((split / "checkpoint.pt").string());
  damaged.state.trained_seconds = -1;
  const std::string damaged_path = (split / "damaged.pt").string();
  save_checkpoint(damaged_path, damaged, *b, nullptr, {});
  EXPECT_ERROR_CONTAINS(read_checkpoint_header(damaged_path), "'trained_seconds' is -1.0, expected a finite number >= 0");
}

// The library's errors name paths and configuration keys, not the CLI's flags.
TEST(Trainer, FolderAndDataErrorsNameThePathsAndKeys) {
  const fs::path data_dir = majority_data("errors_data"), out = fresh_folder("errors_run");
  Config c = tiny_config(data_dir);
  EXPECT_ERROR_CONTAINS(train(c, run_in(out, true)), "cannot resume: no checkpoint at '" + (out / "checkpoint.pt").string() + "'");
  c.data.dir = (out / "missing").string();
  EXPECT_ERROR_CONTAINS(train(c, run_in(out)), fmt::format("no train split at '{}/train.bin': data.dir ('{}') holds no "
                                                           "prepared {} data",
                                                           c.data.dir, c.data.dir, c.task));
}

TEST(Trainer, StopsOnANonFiniteLossKeepingTheLastGoodCheckpoint) {
  at::set_num_threads(1);
  const fs::path data_dir = majority_data("nan_data"), out = fresh_folder("nan_run");
  Config c = tiny_config(data_dir);
  c.train.lr = 1e30;
  c.train.warmup_steps = 0;
  c.train.clip_grad_norm = 0;
  c.train.checkpoint_every = 1;
  c.train.steps = 50;
  const std::string message = testing::error_message([&] { train(c, run_in(out)); });
  ASSERT_NE(message.find("step "), std::string::npos) << message;
  EXPECT_TRUE(message.find("the training loss is") != std::string::npos ||
              message.find("the gradient norm is") != std::string::npos) << message;
  const int64_t failed_step = std::stoll(message.substr(message.find("step ") + 5));
  const CheckpointHeader last = read_checkpoint_header((out / "checkpoint.pt").string());
  EXPECT_EQ(last.state.step, failed_step - 1);
  nn::Model model = inference::build_model(c, majority(1, "x", 1).info());
  load_checkpoint((out / "checkpoint.pt").string(), *model, nullptr, &c);
  for (const auto& p : model->parameters()) EXPECT_TRUE(at::isfinite(p).all().item<bool>());
}

// A tiny model trained for 2 steps into the folder `name`: its configuration; the checkpoint is
// out/checkpoint.pt.
Config two_step_run(const std::string& name, fs::path& out) {
  at::set_num_threads(1);
  out = fresh_folder(name + "_run");
  Config c = tiny_config(majority_data(name + "_data"));
  c.train.steps = 2;
  train(c, run_in(out));
  return c;
}

TEST(Checkpoint, RefusesDamageOtherModelsAndNewerFormats) {
  fs::path out;
  const Config c = two_step_run("damage", out);
  const std::string path = (out / "checkpoint.pt").string(), bytes = read_file(path);
  const std::string damaged = (out / "damaged.pt").string();
  testing::expect_damage_handled(bytes, {[](const std::string& p) { read_checkpoint_header(p); }, damaged},
                                 testing::Damage::always_refused);
  std::string flipped = bytes;
  flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 1);
  write_file_atomically(damaged, flipped);
  EXPECT_ERROR_CONTAINS(read_checkpoint_header(damaged), "is corrupt: its checksum does not match");
  std::string other_version = bytes;
  other_version[8] = 9;
  write_file_atomically(damaged, other_version);
  EXPECT_ERROR_CONTAINS(read_checkpoint_header(damaged), "format version 9; this spe reads version 2 (it was written by a newer spe)");
  other_version[8] = 1;  // LibTorch's archive inside, until 2026-12-03
  write_file_atomically(damaged, other_version);
  EXPECT_ERROR_CONTAINS(read_checkpoint_header(damaged), "format version 1; this spe reads version 2 (it was written by an older spe");
  write_file_atomically(damaged, "a text file");
  EXPECT_ERROR_CONTAINS(read_checkpoint_header(damaged), "is not an spe checkpoint");
  Config other = c;
  other.model.transformer().layers(2);
  nn::Model model = inference::build_model(other, majority(1, "x", 1).info());
  EXPECT_ERROR_CONTAINS(load_checkpoint(path, *model, nullptr, &other), "holds another model than the configuration describes");
  EXPECT_ERROR_CONTAINS(load_checkpoint(path, *model, nullptr, nullptr), "does not fit this model");
}

// The checkpoint's payload changed by `edit` and put in a valid envelope: a crafted file, which
// the checksum cannot catch.
std::string crafted(const std::string& checkpoint, const std::function<void(nlohmann::json&, NamedTensors&)>& edit) {
  const TensorFile file(checkpoint_payload(checkpoint, "crafted"));
  nlohmann::json meta = file.meta();
  NamedTensors tensors;
  for (const std::string& name : file.names_under("")) tensors.emplace_back(name, file.tensor(name));
  edit(meta, tensors);
  return checkpoint_envelope(encode_tensor_file(meta, tensors));
}

at::Tensor& tensor_named(NamedTensors& tensors, const std::string& name) {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::logic_error("the checkpoint has no " + name);
}

TEST(Checkpoint, RefusesCraftedPayloadsSayingWhatIsWrong) {
  fs::path out;
  const Config c = two_step_run("crafted", out);
  const std::string bytes = read_file((out / "checkpoint.pt").string()), path = (out / "crafted.pt").string();
  nn::Model model = inference::build_model(c, majority(1, "x", 1).info());
  torch::optim::AdamW optimizer = make_optimizer(*model, c.train);
  auto load = [&](const std::function<void(nlohmann::json&, NamedTensors&)>& edit) {
    write_file_atomically(path, crafted(bytes, edit));
    load_checkpoint(path, *model, &optimizer, &c);
  };
  load([](nlohmann::json&, NamedTensors&) {});  // unchanged, it loads
  // The optimizer's state is filed under the keys AdamW looks up: a step adds no state of its own.
  const size_t parameters = model->parameters().size();
  EXPECT_EQ(optimizer.state().size(), parameters);
  for (auto& p : model->parameters()) p.mutable_grad() = at::ones_like(p);
  optimizer.step();
  EXPECT_EQ(optimizer.state().size(), parameters);
  const std::string first = "model/" + model->named_parameters().keys().front();
  const std::vector<std::pair<std::function<void(nlohmann::json&, NamedTensors&)>, std::string>> cases{
      {[](nlohmann::json& m, NamedTensors&) { m["state"]["step"] = -1; }, "'step' is -1, expected at least 0"},
      {[](nlohmann::json& m, NamedTensors&) { m["data"]["vocab_size"] = 4e45; }, "'vocab_size' is 4e+45, expected an integer"},
      {[](nlohmann::json& m, NamedTensors&) { m["data"]["grid"] = "wide"; }, "'grid' is \"wide\", expected a list"},
      {[](nlohmann::json& m, NamedTensors&) { m.erase("state"); }, "it has no 'state'"},
      {[](nlohmann::json& m, NamedTensors&) { m["state"]["has_best"] = 3; }, "is not what spe writes"},
      {[](nlohmann::json&, NamedTensors& t) { tensor_named(t, "config") = at::zeros({2}); }, "'config' is not text"},
      {[](nlohmann::json&, NamedTensors& t) { tensor_named(t, "state/best_metric") = at::zeros({2}); },
       "'state/best_metric' is not one float64"},
      {[&](nlohmann::json&, NamedTensors& t) { tensor_named(t, first) = at::zeros({1, 2, 3}); },
       "does not fit this model: '" + first + "' is Float of shape [1, 2, 3], the model's is Float of shape"},
      {[&](nlohmann::json&, NamedTensors& t) { tensor_named(t, first) = tensor_named(t, first).to(at::kDouble); },
       "is Double of shape"},
      {[&](nlohmann::json&, NamedTensors& t) {
         t.erase(std::find_if(t.begin(), t.end(), [&](const auto& entry) { return entry.first == first; }));
       },
       "does not fit this model: it holds no tensor '" + first + "'"},
      {[&](nlohmann::json&, NamedTensors& t) { t.emplace_back("model/extra", at::zeros({1})); },
       "it holds 'model/extra', which this model lacks"},
      {[](nlohmann::json& m, NamedTensors&) { m["optimizer"].erase(1); }, "expected a list of 2 parameter groups"},
      {[](nlohmann::json& m, NamedTensors&) { m["optimizer"][0].push_back(1); }, "its optimizer group 0 is not a list of"},
      {[](nlohmann::json& m, NamedTensors&) { m["optimizer"][0][0] = 0.5; }, "an optimizer step is 0.5, expected an integer"},
      {[](nlohmann::json&, NamedTensors& t) { tensor_named(t, "optimizer/0/0/exp_avg") = at::zeros({5}); },
       "'optimizer/0/0/exp_avg' is Float of shape [5]"},
      {[](nlohmann::json&, NamedTensors& t) { tensor_named(t, "rng/cpu") = at::zeros({3}, at::kByte); },
       "does not fit this model"},
  };
  for (const auto& [edit, expected] : cases) EXPECT_ERROR_CONTAINS(load(edit), expected);
}

TEST(Evaluate, IsReproducibleAndLeavesTheRngAlone) {
  const data::Dataset valid = majority(40, "valid", 3);
  Config c = tiny_config("unused");
  nn::Model model = inference::build_model(c, valid.info());
  at::manual_seed(17);
  const at::Tensor expected_next = at::randn({3});
  at::manual_seed(17);
  const EvalResult first = evaluate(*model, valid, 64, 16, 0, 5);
  EXPECT_TRUE(at::equal(at::randn({3}), expected_next));
  const EvalResult second = evaluate(*model, valid, 64, 16, 0, 5);
  EXPECT_EQ(first.loss, second.loss);
  EXPECT_EQ(first.predictions, 40);
  EXPECT_EQ(first.tokens, 40 * 9);
  EXPECT_EQ(evaluate(*model, valid, 64, 16, 1, 5).predictions, 16);
}

TEST(BatchLoss, LanguageModelsSkipPaddedTargets) {
  Config c = tiny_config("unused");
  c.model.kind(nn::ModelKind::language_model);
  data::DatasetInfo info;
  info.vocab_size = 5;
  info.num_classes = 0;
  data::Dataset d(info);
  d.add(0, {{1, 2, 3, 4}});
  d.add(0, {{4, 3}});
  nn::Model model = inference::build_model(c, info);
  model->eval();
  const data::Batch batch = data::make_batch(d, {0, 1}, 10);
  at::manual_seed(1);
  const BatchLoss b = batch_loss(*model, batch);
  EXPECT_EQ(b.predictions, 3 + 1);
  at::manual_seed(1);
  const at::Tensor logits = model(batch.tokens, batch.padding).log_softmax(-1);
  const double expected = -(logits[0][0][2] + logits[0][1][3] + logits[0][2][4] + logits[1][0][3]).item<double>() / 4;
  EXPECT_NEAR(b.loss.item<double>(), expected, 1e-6);
}

}  // namespace
}  // namespace spe::train
