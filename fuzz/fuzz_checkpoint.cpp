// Any bytes as a checkpoint's payload (spe's tensor file), put in a valid envelope (magic, format
// version, length, checksum) so that the fuzzer reaches the reader behind the checksum: what a
// crafted file, not a damaged one, looks like (damaged envelopes are the damaged-file tests').
// The header is read; when it describes a small model, the model and the trainer's optimizer
// are built and loaded from the file. Only std::exception may escape; nothing may crash. A
// checkpoint that loads must save and read back with the same header.
#include <ATen/CPUGeneratorImpl.h>

#include "fuzz_support.h"
#include "spe/inference/saved_model.h"
#include "spe/train/checkpoint.h"
#include "spe/train/trainer.h"
#include "train/checkpoint_envelope.h"

namespace {

// Models the fuzzer may build: a few thousand parameters, not the gigabytes a header can ask for.
bool small(const spe::train::CheckpointHeader& h) {
  const spe::nn::TransformerOptions& t = h.config.model.transformer();
  const spe::nn::PositionalOptions& p = t.positional();
  int64_t cells = 1;
  for (int64_t side : h.data.grid) cells *= side > 0 && side <= 64 ? side : 1 << 20;
  return h.data.vocab_size <= 512 && h.data.num_classes <= 64 && h.data.grid.size() <= 2 && cells <= 4096 &&
         t.dim() <= 32 && t.heads() <= 4 && t.layers() <= 2 && t.ffn_dim() <= 64 && p.realizations() <= 64 &&
         p.sines() <= 8 && p.kernel_size() <= 256 && p.max_length() <= 4096 && p.clip() <= 64 &&
         t.attention().features() <= 64;
}

void check_loads_and_saves_back(const std::string& path, const spe::train::CheckpointHeader& header) {
  using namespace spe::train;
  spe::nn::Model model = spe::inference::build_model(header.config, header.data);
  torch::optim::AdamW optimizer = make_optimizer(*model, header.config.train);
  at::Generator draws = at::detail::createCPUGenerator();
  load_checkpoint(path, *model, &optimizer, &header.config, 0, &draws);
  const std::string again = path + ".again";
  save_checkpoint(again, header, *model, &optimizer, {{at::detail::getDefaultCPUGenerator().get_state(), draws.get_state()}});
  const CheckpointHeader read = read_checkpoint_header(again);
  spe::fuzz::require(to_yaml(read.config) == to_yaml(header.config), "the configuration reads back the same");
  spe::fuzz::require(read.state.step == header.state.step && read.state.sampler.offset == header.state.sampler.offset &&
                         read.data.vocab_size == header.data.vocab_size && read.data.grid == header.data.grid,
                     "the state and data read back the same");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = spe::fuzz::scratch_file(spe::train::checkpoint_envelope(spe::fuzz::as_string(data, size)), ".pt");
  try {
    const spe::train::CheckpointHeader header = spe::train::read_checkpoint_header(path);
    if (small(header)) check_loads_and_saves_back(path, header);
  } catch (const std::exception&) {
  }
  return 0;
}
