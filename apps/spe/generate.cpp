// `spe generate`: new music from a trained language model of REMI tokens, token by token with
// the recurrent decoder (constant cost per token) and nn::generate, optionally continuing a MIDI
// prompt, drawing only tokens the REMI grammar allows where they stand (unless --no-grammar);
// writes a MIDI file, a piano roll and, with fluidsynth, audio.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <set>

#include "commands.h"
#include "gnuplot.h"
#include "measure.h"
#include "spe/inference/saved_model.h"
#include "spe/midi/midi_file.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"
#include "spe/nn/decoder.h"
#include "spe/nn/generate.h"
#include "spe/util/process.h"
#include "spe/util/threads.h"

namespace spe::cli {
namespace {

struct GenerateArgs {
  std::string checkpoint, prompt, out, png, wav;
  std::string soundfont = "/usr/share/sounds/sf2/TimGM6mb.sf2";
  int64_t tokens = 512, seed = 1;
  double temperature = 1.0, top_p = 0.95;
  std::string decoder = "fastest";
  bool no_grammar = false;
};

// The prompt's tokens: BOS alone, or BOS and the encoded MIDI file without its EOS.
std::vector<int64_t> prompt_tokens(const GenerateArgs& a, const midi::RemiVocabulary& vocabulary) {
  if (a.prompt.empty()) return {vocabulary.bos()};
  const std::vector<uint16_t> encoded = vocabulary.encode(midi::score_from_midi(midi::load_midi(a.prompt)));
  std::vector<int64_t> tokens(encoded.begin(), encoded.end());
  if (!tokens.empty() && tokens.back() == vocabulary.eos()) tokens.pop_back();
  return tokens;
}

// Notes as horizontal bars, time in beats against pitch, one colour per program.
void plot_piano_roll(const std::string& png, const midi::Score& score, const std::string& title) {
  std::map<int, std::string> by_program;
  for (const midi::Note& n : score.notes) {
    const double start = static_cast<double>(n.start) / midi::kStepsPerQuarter;
    const double length = static_cast<double>(n.duration) / midi::kStepsPerQuarter;
    by_program[n.program] += fmt::format("{} {} {} 0\n", start, n.pitch, length);
  }
  std::string script = fmt::format(
      "set termoption noenhanced\nset title {}\nset xlabel 'quarter notes'\nset ylabel 'pitch (MIDI)'\n"
      "set grid\nset key outside right\nset yrange [0:127]\nplot ",
      gnuplot_quote(title));
  std::string data;
  bool first = true;
  for (const auto& [program, lines] : by_program) {
    script += fmt::format("{}'-' using 1:2:3:4 with vectors nohead lw 3 title '{}'", first ? "" : ", ",
                          program == midi::kDrumProgram ? std::string("drums") : fmt::format("program {}", program));
    data += lines + "e\n";
    first = false;
  }
  if (by_program.empty()) script += "NaN notitle";
  plot_png(png, script + "\n" + data, 1200, 600);
}

void render_audio(const GenerateArgs& a) {
  if (!std::filesystem::exists(a.soundfont))
    throw std::runtime_error(fmt::format("no soundfont at '{}' (install timgm6mb-soundfont or pass --soundfont)", a.soundfont));
  const std::string partial = a.wav + ".partial.wav";
  const int status = run_program({"fluidsynth", "-ni", "-q", "-F", partial, "-r", "44100", a.soundfont, a.out});
  if (status != 0 || !std::filesystem::exists(partial))
    throw std::runtime_error(fmt::format("fluidsynth failed to render the audio ({}; is the fluidsynth package installed?)",
                                         describe_exit(status)));
  std::filesystem::rename(partial, a.wav);
}

// The REMI grammar as generate's constraint: it reads the tokens it has not seen yet, then gives
// the (V) mask of the tokens decoding would read next, refilled in one tensor.
nn::AllowedNext remi_grammar_mask() {
  auto grammar = std::make_shared<midi::RemiGrammar>();
  auto read = std::make_shared<size_t>(0);
  const at::Tensor mask = at::empty({midi::RemiVocabulary().size()}, at::kBool);
  return [grammar, read, mask](const std::vector<int64_t>& tokens) {
    for (; *read < tokens.size(); ++*read) grammar->push(tokens[*read]);
    bool* out = mask.data_ptr<bool>();
    for (int64_t id = 0; id < mask.size(0); ++id) out[id] = grammar->allows(id);
    return mask;
  };
}

void run(const GenerateArgs& a) {
  inference::SavedModel saved = inference::load_saved_model(a.checkpoint);
  const midi::RemiVocabulary vocabulary;
  if (saved.header.data.task != "music" || saved.header.data.vocab_size != vocabulary.size())
    throw std::runtime_error(fmt::format("'{}' was trained on {} data (vocabulary {}); spe generate needs a model of "
                                         "music tokens (spe data midi, vocabulary {})",
                                         a.checkpoint, saved.header.data.task, saved.header.data.vocab_size,
                                         vocabulary.size()));
  nn::GenerateOptions options;
  options.sampling.temperature = a.temperature;
  options.sampling.top_p = a.top_p;
  options.sampling.banned = {vocabulary.pad(), vocabulary.bos()};
  nn::check_sampling_options(options.sampling, vocabulary.size());
  options.max_tokens = a.tokens;
  options.stop_token = vocabulary.eos();
  if (!a.no_grammar) options.allowed = remi_grammar_mask();

  const std::vector<int64_t> prompt = prompt_tokens(a, vocabulary);
  at::Generator generator = make_generator(static_cast<uint64_t>(a.seed));
  const nn::DecoderKind kind = a.decoder == "fastest" ? nn::fastest_decoder(saved.model)
                                                      : parse_choice("--decoder", a.decoder, nn::kDecoderKinds);
  // The recurrent decoders' steps read every weight once for one position (spe::threads_for_decoding;
  // the fused step runs on one thread); the prefix decoder's is a forward pass over the whole prefix
  // (the rule of training's steps).
  if (kind != nn::DecoderKind::prefix)
    choose_decoding_threads(static_cast<double>(nn::parameter_bytes(*saved.model)));
  else
    choose_step_threads(step_flops(nn::parameter_count(*saved.model), static_cast<double>(prompt.size() + a.tokens), false),
                        nn::softmax_attention(saved.model->options));
  auto decoder = nn::make_decoder(kind, saved.model, 1, generator);
  const double start = now_s();
  const nn::Generation generation = nn::generate(*decoder, prompt, options, generator);
  const double seconds = now_s() - start;
  const std::vector<uint16_t> ids(generation.tokens.begin(), generation.tokens.end());
  const midi::RemiDecoding decoded = vocabulary.decode(ids);
  midi::save_midi(a.out, midi::midi_from_score(decoded.score));
  std::cout << fmt::format(
      "{{\"checkpoint\": \"{}\", \"decoder\": \"{}\", \"prompt_tokens\": {}, \"generated_tokens\": {}, \"stopped_at_eos\": {}, "
      "\"grammar\": {}, \"notes\": {}, \"skipped_tokens\": {}, \"seconds\": {:.2f}, \"tokens_per_s\": {:.1f}, "
      "\"out\": \"{}\"}}\n",
      a.checkpoint, choice_name(kind, nn::kDecoderKinds), generation.prompt_tokens, generation.generated, generation.stopped ? "true" : "false",
      a.no_grammar ? "false" : "true", decoded.score.notes.size(), decoded.skipped, seconds,
      static_cast<double>(generation.tokens.size()) / seconds, a.out);
  if (!a.png.empty()) {
    plot_piano_roll(a.png, decoded.score,
                    fmt::format("{}: {} generated tokens, seed {}, temperature {}, top-p {}", a.out, generation.generated,
                                a.seed, a.temperature, a.top_p));
    std::cout << "piano roll: " << a.png << "\n";
  }
  if (!a.wav.empty()) {
    render_audio(a);
    std::cout << "audio: " << a.wav << "\n";
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "generate music with a trained language model (MIDI out)");
  sub->add_option("--checkpoint", a->checkpoint, "a music run's checkpoint.pt")->required()->check(CLI::ExistingFile);
  sub->add_option("--out", a->out, "the MIDI file to write")->required();
  sub->add_option("--tokens", a->tokens, "tokens to generate (stops earlier at end-of-sequence)")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--prompt", a->prompt, "a MIDI file to continue")->check(CLI::ExistingFile);
  sub->add_option("--temperature", a->temperature, "> 0; below 1 sharpens the distribution")->capture_default_str();
  sub->add_option("--top-p", a->top_p, "nucleus sampling mass in (0, 1]")->capture_default_str();
  sub->add_option("--seed", a->seed, "seed of the sampling and of the SPE code")->capture_default_str();
  sub->add_option("--png", a->png, "also draw a piano roll (gnuplot)");
  sub->add_option("--wav", a->wav, "also render audio with fluidsynth");
  sub->add_option("--soundfont", a->soundfont, "General MIDI soundfont for --wav")->capture_default_str();
  sub->add_option("--decoder", a->decoder,
                  "fastest (fused where it covers the model, else recurrent), fused or recurrent (constant cost per "
                  "token), or prefix (recomputes the prefix, the reference)")
      ->capture_default_str();
  sub->add_flag("--no-grammar", a->no_grammar,
                "draw any token, not only those the REMI grammar allows where they stand (decoding then skips the "
                "misplaced ones: skipped_tokens)");
  sub->callback([a] { run(*a); });
}

}  // namespace spe::cli
