#pragma once
// The whole public API of spe in one include.
#include "spe/random.h"
#include "spe/encoding/spe_code.h"
#include "spe/encoding/sine_spe.h"
#include "spe/encoding/conv_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/encoding/absolute.h"
#include "spe/encoding/rotary.h"
#include "spe/encoding/relative.h"
#include "spe/attention/masks.h"
#include "spe/attention/feature_maps.h"
#include "spe/attention/softmax.h"
#include "spe/attention/linear.h"
#include "spe/ops/causal_linear_attention.h"
#include "spe/ops/sine_spe_filter.h"

namespace spe {

// The library's version, "MAJOR.MINOR.PATCH".
const char* version();

}  // namespace spe
