"""spe for PyTorch: Stochastic Positional Encoding (sineSPE, convSPE, the gated filter), rotary,
decay and Toeplitz relative positions, feature maps, linear and softmax attention as torch.nn
modules and functions with the math, options and state_dict names of spe's C++ modules, on its
fused ops (torch.ops.spe.*, from libspe_torch_ops.so).

Importing the package loads the ops library when it can find it (see load_library); when it
cannot, the first call that needs the ops raises OpsLibraryNotFoundError naming every place
tried. docs/PYTHON.md is the guide."""
from ._library import OpsLibraryNotFoundError, load_library, ops_library_path, search_path, try_load_at_import
from .checkpoint import Checkpoint, read_checkpoint, state_dict_under
from .conv_spe import ConvSPE
from .decay import Decay
from .feature_maps import FeatureMap, favor_features, orthogonal_random_features
from .linear import (LinearAttention, causal_linear_attention, causal_linear_attention_positioned,
                     causal_linear_attention_separable,
                     causal_linear_attention_quadratic, causal_product, clipped_toeplitz_linear_attention,
                     decayed_causal_product,
                     decayed_linear_attention, linear_attention, linear_attention_positioned,
                     linear_attention_separable,
                     toeplitz_linear_attention)
from .rotary import RotaryEncoding
from .sine_spe import SineCode, SineSPE, filter_with_code, sine_code_at
from .softmax import softmax_attention
from .spe_filter import SPEFilter
from .toeplitz import ToeplitzBias

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "ConvSPE", "Decay", "FeatureMap", "LinearAttention", "OpsLibraryNotFoundError", "RotaryEncoding",
    "SPEFilter", "SineCode", "SineSPE", "ToeplitzBias", "causal_linear_attention", "causal_linear_attention_positioned",
    "causal_linear_attention_separable",
    "causal_linear_attention_quadratic", "causal_product", "decayed_causal_product", "decayed_linear_attention",
    "favor_features", "filter_with_code", "linear_attention", "linear_attention_positioned",
    "linear_attention_separable", "load_library",
    "ops_library_path", "orthogonal_random_features", "read_checkpoint", "search_path", "sine_code_at",
    "softmax_attention", "state_dict_under", "toeplitz_linear_attention", "clipped_toeplitz_linear_attention",
]

try_load_at_import()
