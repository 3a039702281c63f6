#pragma once
// The envelope of a checkpoint file (see spe/train/checkpoint.h): magic, format version, payload
// length and checksum around the payload. For the code that makes checkpoints spe did not write
// (the crafted-file tests and fuzz_checkpoint), so that it follows the real format.
#include <string>

namespace spe::train {

// A checkpoint file holding `payload` (a tensor file), with this spe's format version.
std::string checkpoint_envelope(const std::string& payload);
// The payload of a checkpoint file's bytes, after checking everything around it; errors name path.
std::string checkpoint_payload(const std::string& bytes, const std::string& path);

}  // namespace spe::train
