#include "spe/version.h"

namespace spe {

const char* version() { return SPE_VERSION; }

}  // namespace spe
