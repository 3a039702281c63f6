// Any sequence of token ids (as a language model might produce): decoding never fails, and the
// score it gives writes a file that reads again and encodes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "spe/midi/midi_file.h"
#include "spe/midi/remi.h"
#include "spe/midi/score.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace spe::midi;
  static const RemiVocabulary vocabulary;
  std::vector<uint16_t> tokens(size / 2);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(data[2 * i] | (data[2 * i + 1] << 8));
  const Score score = vocabulary.decode(tokens).score;
  const MidiFile file = read_midi(write_midi(midi_from_score(score)), "decoded");
  vocabulary.encode(score_from_midi(file));
  return 0;
}
