// The music path as a user runs it: `spe midi`, `spe data midi --in`, a small language model,
// `spe generate` (MIDI and piano roll, with and without the REMI grammar) and `spe extrapolate`,
// and the mistakes they name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/cli.h"

namespace spe {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

const std::string kDebianFile = "/usr/share/games/simutrans/music/34-flyingaway.mid";

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CliMidi, EncodeDecodeEncodeGivesTheSameTokens) {
  const fs::path dir = testing::fresh_folder("midi_cli");
  auto run = run_cli("midi encode " + kDebianFile + " --out " + (dir / "a.txt").string());
  ASSERT_EQ(run.status, 0) << run.output;
  run = run_cli("midi decode " + (dir / "a.txt").string() + " --out " + (dir / "a.mid").string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("0 tokens skipped"), std::string::npos) << run.output;
  run = run_cli("midi encode " + (dir / "a.mid").string() + " --out " + (dir / "b.txt").string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_EQ(read_text(dir / "a.txt"), read_text(dir / "b.txt"));
  run = run_cli("midi info " + (dir / "a.mid").string());
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_GT(nlohmann::json::parse(run.output)["notes"].get<int>(), 100);
}

TEST(CliMidi, DamagedFilesAndUnknownTokensAreNamed) {
  const fs::path dir = testing::fresh_folder("midi_cli_errors");
  const std::string bytes = read_text(kDebianFile);
  // Cut inside its first track chunk's header: nothing can be read (a file cut later keeps its
  // whole events, as players read it; tests/midi covers that).
  std::ofstream(dir / "cut.mid", std::ios::binary) << bytes.substr(0, 20);
  auto run = run_cli("midi encode " + (dir / "cut.mid").string());
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("cut.mid: at byte"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("truncated"), std::string::npos) << run.output;
  std::ofstream(dir / "bad.txt") << "BOS Bar Pitch_60 Oboe_3\n";
  run = run_cli("midi decode " + (dir / "bad.txt").string() + " --out " + (dir / "x.mid").string());
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("'Oboe_3' is neither a token name nor an id"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(dir / "x.mid"));
}

// Five Debian files as the user's own folder (one of them damaged: skipped and reported), a tiny
// model trained a few steps, then generation and extrapolation from its checkpoint.
TEST(CliMusic, DataTrainGenerateAndExtrapolate) {
  const fs::path dir = testing::fresh_folder("music_cli"), songs = dir / "songs";
  fs::create_directories(songs);
  int copied = 0;
  for (const auto& entry : fs::directory_iterator("/usr/share/games/openttd/baseset/openmsx"))
    if (entry.path().extension() == ".mid" && copied++ < 5) fs::copy_file(entry.path(), songs / entry.path().filename(),
                                                                          fs::copy_options::overwrite_existing);
  std::ofstream(songs / "broken.mid", std::ios::binary) << "MThd\x00\x00";
  auto run = run_cli("data midi --in " + songs.string() + " --out " + (dir / "data").string() +
                     " --window 64 --valid-fraction 0.2 --test-fraction 0.2");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("skipped " + (songs / "broken.mid").string()), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("\"skipped_files\": 1"), std::string::npos) << run.output;

  run = run_cli("train --config " SPE_SOURCE_DIR "/configs/music/lm.yaml --out " + (dir / "run").string() +
                " --no-progress --set data.dir=" + (dir / "data").string() +
                " data.max_length=64 model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32"
                " model.positional.realizations=8 train.steps=4 train.batch_size=4 train.warmup_steps=1"
                " train.eval_every=2 train.checkpoint_every=2 train.log_every=1 train.eval_batches=1");
  ASSERT_EQ(run.status, 0) << run.output;
  const std::string checkpoint = (dir / "run" / "checkpoint.pt").string();

  run = run_cli("generate --checkpoint " + checkpoint + " --tokens 200 --seed 3 --out " + (dir / "new.mid").string() +
                " --png " + (dir / "roll.png").string() + " --prompt " + kDebianFile);
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_TRUE(fs::file_size(dir / "roll.png") > 1000);
  ASSERT_EQ(run_cli("midi info " + (dir / "new.mid").string()).status, 0);
  const auto first_line = run.output.substr(0, run.output.find('\n'));
  const auto report = nlohmann::json::parse(first_line);
  EXPECT_GT(report["prompt_tokens"].get<int>(), 100);  // the prompt file's tokens, fed first
  EXPECT_GE(report["generated_tokens"].get<int>(), 1);
  EXPECT_TRUE(report["grammar"].get<bool>());
  EXPECT_EQ(report["skipped_tokens"].get<int>(), 0);  // the grammar draws only what decoding reads
  // Without the grammar the barely trained model draws tokens decoding skips.
  run = run_cli("generate --checkpoint " + checkpoint + " --tokens 200 --seed 3 --no-grammar --out " +
                (dir / "free.mid").string());
  ASSERT_EQ(run.status, 0) << run.output;
  const auto free = nlohmann::json::parse(run.output.substr(0, run.output.find('\n')));
  EXPECT_FALSE(free["grammar"].get<bool>());
  EXPECT_GT(free["skipped_tokens"].get<int>(), 0);

  run = run_cli("extrapolate --checkpoint " + checkpoint + " --length 256 --bins 4 --json " + (dir / "x.jsonl").string());
  ASSERT_EQ(run.status, 0) << run.output;
  const auto line = nlohmann::json::parse(read_text(dir / "x.jsonl").substr(0, read_text(dir / "x.jsonl").find('\n')));
  EXPECT_EQ(line["trained_length"].get<int>(), 64);
  EXPECT_EQ(line["nll_bins"].size(), 4u);
  EXPECT_GT(line["nll_beyond_trained_length"].get<double>(), 0.0);

  run = run_cli("generate --checkpoint " + checkpoint + " --temperature 0 --out " + (dir / "y.mid").string());
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("temperature is 0"), std::string::npos) << run.output;
  run = run_cli("extrapolate --checkpoint " + checkpoint + " --length 100000");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("has 100000 tokens"), std::string::npos) << run.output;
  run = run_cli("extrapolate --checkpoint " + checkpoint + " --length 256 --rope-scaling yarn");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("has no rotary encoding (model.positional.kind is sine_spe)"), std::string::npos)
      << run.output;

  // A rotary model evaluated at 4x its length with each scaling: the factor defaults to 256 / 64.
  run = run_cli("train --config " SPE_SOURCE_DIR "/configs/music/lm.yaml --out " + (dir / "rope").string() +
                " --no-progress --set data.dir=" + (dir / "data").string() +
                " data.max_length=64 model.dim=16 model.heads=2 model.layers=1 model.ffn_dim=32"
                " model.positional.kind=rotary train.steps=2 train.batch_size=4 train.warmup_steps=1"
                " train.eval_every=2 train.checkpoint_every=2 train.log_every=1 train.eval_batches=1");
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* scaling : {"linear", "ntk", "yarn"}) {
    run = run_cli("extrapolate --checkpoint " + (dir / "rope" / "checkpoint.pt").string() +
                  " --length 256 --bins 2 --rope-scaling " + scaling + " --json " + (dir / "r.jsonl").string());
    ASSERT_EQ(run.status, 0) << run.output;
    const auto scaled = nlohmann::json::parse(read_text(dir / "r.jsonl"));
    EXPECT_EQ(scaled["rope_scaling"].get<std::string>(), scaling);
    EXPECT_DOUBLE_EQ(scaled["factor"].get<double>(), 4.0);
    EXPECT_TRUE(std::isfinite(scaled["nll_beyond_trained_length"].get<double>()));
  }
  run = run_cli("extrapolate --checkpoint " + (dir / "rope" / "checkpoint.pt").string() +
                " --length 256 --rope-scaling cubic");
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.output.find("--rope-scaling: 'cubic' is not one of: none, linear, ntk, yarn"), std::string::npos)
      << run.output;
}

}  // namespace
}  // namespace spe
