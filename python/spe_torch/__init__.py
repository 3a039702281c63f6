"""spe for PyTorch: Stochastic Positional Encoding (sineSPE, convSPE, the gated filter), feature
maps and linear attention as torch.nn modules with the math, options and state_dict names of
spe's C++ modules, on its fused ops (torch.ops.spe.*, from libspe_torch_ops.so).

Importing the package loads the ops library when it can find it (see load_library); when it
cannot, the first call that needs the ops raises OpsLibraryNotFoundError naming every place
tried. docs/PYTHON.md is the guide."""
from ._library import OpsLibraryNotFoundError, load_library, ops_library_path, search_path, try_load_at_import
from .checkpoint import Checkpoint, read_checkpoint, state_dict_under
from .conv_spe import ConvSPE
from .feature_maps import FeatureMap, favor_features, orthogonal_random_features
from .linear import (LinearAttention, causal_linear_attention, causal_linear_attention_positioned,
                     causal_linear_attention_quadratic, causal_product, linear_attention, linear_attention_positioned)
from .sine_spe import SineCode, SineSPE, filter_with_code, sine_code_at
from .spe_filter import SPEFilter

__version__ = "0.1.0"

__all__ = [
    "Checkpoint", "ConvSPE", "FeatureMap", "LinearAttention", "OpsLibraryNotFoundError", "SPEFilter", "SineCode",
    "SineSPE", "causal_linear_attention", "causal_linear_attention_positioned", "causal_linear_attention_quadratic",
    "causal_product", "favor_features", "filter_with_code", "linear_attention", "linear_attention_positioned",
    "load_library", "ops_library_path", "orthogonal_random_features", "read_checkpoint", "search_path",
    "sine_code_at", "state_dict_under",
]

try_load_at_import()
