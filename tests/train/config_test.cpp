// Configurations: defaults, overrides, the resolved YAML round trip, errors that name the key and
// what is allowed, the learning-rate schedules against their formulas, and every shipped config.
#include "spe/train/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "support/errors.h"

namespace spe::train {
namespace {

TEST(Config, OverridesApplyAndTheResolvedYamlRoundTrips) {
  const Config c = parse_config("model:\n  layers: 3\n  positional:\n    kind: sine_spe\n",
                                {"model.dim=64", "train.lr=3e-4", "model.attention.kind=favor", "train.schedule=linear"});
  EXPECT_EQ(c.model.transformer().layers(), 3);
  EXPECT_EQ(c.model.transformer().dim(), 64);
  EXPECT_EQ(c.model.transformer().positional().kind(), nn::PositionalKind::sine_spe);
  EXPECT_EQ(c.model.transformer().attention().kind(), nn::AttentionKind::favor);
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.schedule, Schedule::linear);
  const std::string yaml = to_yaml(c);
  EXPECT_EQ(to_yaml(parse_config(yaml)), yaml);
  EXPECT_NE(yaml.find("lr: 0.0003\n"), std::string::npos) << yaml;
  EXPECT_EQ(to_yaml(parse_config("")), to_yaml(Config()));
}

TEST(Config, ErrorsNameTheKeyAndWhatIsAllowed) {
  EXPECT_ERROR_CONTAINS(parse_config("model:\n  layer: 3\n", {}, "run.yaml"),
                        "run.yaml: unknown key 'model.layer'; allowed here: ");
  EXPECT_ERROR_CONTAINS(parse_config("model:\n  layer: 3\n"), "layers");
  EXPECT_ERROR_CONTAINS(parse_config("", {"model.positional.kind=sine"}),
                        "model.positional.kind: 'sine' is not one of: none, sinusoidal, learned, rotary, shaw, sine_spe, conv_spe");
  EXPECT_ERROR_CONTAINS(parse_config("train:\n  steps: many\n"), "train.steps: expected an integer, got 'many'");
  EXPECT_ERROR_CONTAINS(parse_config("train:\n  steps: [1, 2]\n"), "train.steps: expected an integer, got a list");
  EXPECT_ERROR_CONTAINS(parse_config("model: 4\n"), "model: expected a section of keys, got '4'");
  // Found by fuzz_config: an override on a file that is not a map of keys escaped as yaml-cpp's error.
  EXPECT_ERROR_CONTAINS(parse_config("just words\n", {"model.layers=2"}, "words.yaml"),
                        "words.yaml: expected a section of keys at the top, got 'just words'");
  // Found by fuzz_config: carriage returns as a task name were accepted, and the resolved YAML
  // (yaml-cpp writes them unquoted) read back with one fewer.
  EXPECT_ERROR_CONTAINS(parse_config("task: \r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r\r", {}, "cr.yaml"),
                        "cr.yaml: task: control character 0x0d at offset 0 of ''; expected printable text");
  EXPECT_ERROR_CONTAINS(parse_config("data:\n  dir: \"data/\\ttext\"\n"),
                        "data.dir: control character 0x09 at offset 5 of 'data/'");
  EXPECT_ERROR_CONTAINS(parse_config("", {"task=\"a\\x7f\""}), "task: control character 0x7f at offset 1 of 'a'");
  EXPECT_ERROR_CONTAINS(parse_config("- 1\n- 2\n", {}, "list.yaml"), "list.yaml: expected a section of keys at the top, got a list");
  EXPECT_ERROR_CONTAINS(parse_config("[1, 2]: 3\n", {}, "key.yaml"), "key.yaml: line 1, column 1");
  EXPECT_ERROR_CONTAINS(parse_config("model:\n  dim: 10\n  heads: 4\n"), "model: dim 10 must be a positive multiple of heads 4");
  EXPECT_ERROR_CONTAINS(parse_config("", {"model.positional.kind=shaw"}), "set attention.kind to softmax");
  EXPECT_ERROR_CONTAINS(parse_config("", {"train.accumulation=3"}), "train.accumulation is 3, expected a divisor of train.batch_size (16)");
  EXPECT_ERROR_CONTAINS(parse_config("", {"train.lr=-1"}), "train.lr is -1");
  EXPECT_ERROR_CONTAINS(parse_config("", {"model.dropout=1.5"}), "dropout is 1.5");
  EXPECT_ERROR_CONTAINS(parse_config("", {"layers=3"}), "unknown key 'layers'");
  EXPECT_ERROR_CONTAINS(parse_config("", {"model.layers"}), "not of the form key.path=value");
  EXPECT_ERROR_CONTAINS(parse_config("", {"model.layers="}), "has no value");
  EXPECT_ERROR_CONTAINS(parse_config("model:\n  layers: [3\n", {}, "bad.yaml"), "bad.yaml: not valid YAML at line");
  EXPECT_ERROR_CONTAINS(load_config("/nonexistent.yaml"), "cannot open '/nonexistent.yaml'");
}

TEST(Config, LearningRateFollowsWarmupAndEachSchedule) {
  TrainConfig t;
  t.lr = 2.0;
  t.steps = 110;
  t.warmup_steps = 10;
  t.min_lr_ratio = 0.1;
  for (int64_t s = 0; s < 10; ++s) EXPECT_DOUBLE_EQ(learning_rate(t, s), 2.0 * (s + 1) / 10.0);
  for (int64_t s = 10; s <= 110; s += 7) {
    const double p = (s - 10) / 100.0;
    t.schedule = Schedule::cosine;
    EXPECT_NEAR(learning_rate(t, s), 2.0 * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * p))), 1e-12);
    t.schedule = Schedule::linear;
    EXPECT_NEAR(learning_rate(t, s), 2.0 * (0.1 + 0.9 * (1 - p)), 1e-12);
    t.schedule = Schedule::inverse_sqrt;
    EXPECT_NEAR(learning_rate(t, s), 2.0 * std::sqrt(10.0 / (s + 1)), 1e-12);
    t.schedule = Schedule::constant;
    EXPECT_DOUBLE_EQ(learning_rate(t, s), 2.0);
  }
}

TEST(Config, EveryShippedConfigIsValid) {
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(SPE_SOURCE_DIR "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(load_config(entry.path().string()));
    ++count;
  }
  EXPECT_GT(count, 0);
}

}  // namespace
}  // namespace spe::train
