#pragma once

namespace spe {

// The library's version, "MAJOR.MINOR.PATCH".
const char* version();

}  // namespace spe
