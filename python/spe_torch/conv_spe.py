"""Convolutional Stochastic Positional Encoding (convSPE), as spe's C++ spe::ConvSPE
(include/spe/encoding/conv_spe.h), over sequences (ndim 1) or images (ndim 2). White noise
Z ~ N(0, 1) of extent L + 4S per axis for every (r, h, d) is cross-correlated with each filter
without padding and cropped to [S, S + L) (1-D on CPU: torch.ops.spe.depthwise_correlation, fused):
  Qbar = (Z * weight_q) / (R D)^(1/4),   Kbar = (Z * weight_k) / (R D)^(1/4)
so E[sum_r Qbar(m) Kbar(n)] = sqrt(R / D) sum_j weight_q[j] weight_k[j + (m - n)] (per axis).
weight_q produces Qbar; the authors' code names it conv_k."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _library
from ._checks import check_positive, fused_kernel_takes, shape_of

CONV_ALGORITHMS = ("automatic", "direct", "fft")
FFT_MIN_TAPS_1D = 2048  # "automatic" takes FFTs for 1-D filters from this many taps (C++ kFftMinTaps1d)


def _direct_correlate(x: Tensor, w: Tensor) -> Tensor:
    """Depthwise cross-correlation, no padding: x (batch, H*D, extent...), w (H, D, S...)."""
    weight = w.flatten(0, 1).unsqueeze(1)  # (H*D, 1, S...)
    if w.dim() == 3:
        return F.conv1d(x, weight, groups=weight.size(0))
    return F.conv2d(x, weight, groups=weight.size(0))


def _fft_correlate(x: Tensor, w: Tensor) -> Tensor:
    """The same through FFTs of the extent's length (the outputs kept never wrap around)."""
    dims = list(range(2, x.dim()))
    extents = [x.size(d) for d in dims]
    filters = w.flatten(0, 1).unsqueeze(0)  # (1, H*D, S...)
    spectrum = torch.fft.rfftn(x, extents, dims) * torch.conj(torch.fft.rfftn(filters, extents, dims))
    out = torch.fft.irfftn(spectrum, extents, dims)
    for d in dims:
        out = out.narrow(d, 0, x.size(d) - w.size(d) + 1)
    return out


def _uses_fft(w: Tensor, algorithm: str, fft_min_taps_1d: int = FFT_MIN_TAPS_1D) -> bool:
    large_1d = w.dim() == 3 and w.size(2) >= fft_min_taps_1d
    return algorithm == "fft" or (algorithm == "automatic" and large_1d)


def depthwise_correlate(x: Tensor, w: Tensor, algorithm: str, fft_min_taps_1d: int = FFT_MIN_TAPS_1D) -> Tensor:
    """x (batch, H*D, extent...) against w (H, D, S...) -> (batch, H*D, extent - S + 1 ...). "automatic"
    takes FFTs for 1-D filters of fft_min_taps_1d taps or more (the crossover spe measured), else direct."""
    if _uses_fft(w, algorithm, fft_min_taps_1d):
        return _fft_correlate(x, w)
    return _direct_correlate(x, w)


def _fused_correlation(w: Tensor, algorithm: str) -> bool:
    """Whether a code's direct correlation runs on torch.ops.spe.depthwise_correlation (CPU, float32 or
    float64), which reads the noise rows (positions..., H*D, R) as drawn and writes the code in its order."""
    return not _uses_fft(w, algorithm) and fused_kernel_takes(w)


class ConvSPE(nn.Module):
    """Parameters (the C++ state_dict names): weight_q, weight_k, each (H, D, S) or (H, D, S, S).
    Noise comes from torch's default generator: the same distribution as the C++ draws (which are
    keyed per position for decoding), not the same numbers."""

    def __init__(self, heads: int, dim: int, ndim: int = 1, kernel_size: int = 200, realizations: int = 256,
                 algorithm: str = "automatic"):
        super().__init__()
        for name, value in (("heads", heads), ("dim", dim), ("kernel_size (S)", kernel_size),
                            ("realizations (R)", realizations)):
            check_positive("ConvSPE", name, value)
        if ndim not in (1, 2):
            raise ValueError(f"ConvSPE: ndim must be 1 (sequences) or 2 (images), got {ndim}")
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"ConvSPE: algorithm must be one of {', '.join(CONV_ALGORITHMS)}, got {algorithm!r}")
        self.heads, self.dim, self.ndim, self.kernel_size = heads, dim, ndim, kernel_size
        self.realizations, self.algorithm = realizations, algorithm
        shape = [heads, dim] + [kernel_size] * ndim
        self.weight_q = nn.Parameter(torch.empty(shape))
        self.weight_k = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U[0, 1) / sqrt(S^ndim / 2), weight_q then weight_k, as in C++."""
        scale = math.sqrt(self.kernel_size ** self.ndim / 2.0)
        with torch.no_grad():
            self.weight_q.copy_(torch.rand(self.weight_q.shape) / scale)
            self.weight_k.copy_(torch.rand(self.weight_k.shape) / scale)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, dim={self.dim}, ndim={self.ndim}, kernel_size={self.kernel_size}, "
                f"realizations={self.realizations}, algorithm={self.algorithm}")

    def _check_shape(self, where: str, shape: List[int]) -> None:
        if len(shape) != self.ndim:
            raise ValueError(f"{where}: shape must have {self.ndim} extent(s) for ndim={self.ndim}, got {shape}")
        for extent in shape:
            check_positive(where, "every extent of shape", extent)

    def _fused_code_of(self, rows: Tensor, w: Tensor, shape: List[int], scale: float) -> Tensor:
        """The noise rows (extents..., H*D, R) filtered by w, positions [0, L) per axis -> (N, H, D, R):
        the noise under their filters, [S, L + 2S - 1) per axis, through the fused op."""
        if not torch.jit.is_scripting():
            _library.load_library()
        under = rows
        for axis, extent in enumerate(shape):
            under = under.narrow(axis, self.kernel_size, extent + self.kernel_size - 1)
        code = torch.ops.spe.depthwise_correlation(under, (w * scale).flatten(0, 1))
        return code.reshape(-1, self.heads, self.dim, rows.size(-1))

    def _code_of(self, z: Tensor, w: Tensor, shape: List[int], scale: float) -> Tensor:
        """The noise z (R, H*D, extents...) filtered by w, cropped to shape -> (N, H, D, R)."""
        c = depthwise_correlate(z, w, self.algorithm)
        for axis, extent in enumerate(shape):
            c = c.narrow(2 + axis, self.kernel_size, extent)
        order = [2 + axis for axis in range(len(shape))] + [1, 0]
        return c.permute(order).reshape(-1, self.heads, self.dim, z.size(0)) * scale

    def forward(self, shape: List[int], realizations: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """A fresh code for a sequence [L] or an image [L1, L2] (flattened row-major, N = L1 L2):
        (qbar, kbar), each (N, H, D, R); SPEFilter.forward_materialised applies it."""
        r = self.realizations if realizations is None else realizations
        self._check_shape("ConvSPE.forward", shape)
        check_positive("ConvSPE.forward", "realizations (R)", r)
        extents = [extent + 4 * self.kernel_size for extent in shape]
        scale = float(r * self.dim) ** -0.25
        # noise rows by position, as C++ draws them: (extents..., H*D, R)
        rows = torch.randn(extents + [self.heads * self.dim, r], dtype=self.weight_q.dtype, device=self.weight_q.device)
        if _fused_correlation(self.weight_q, self.algorithm):
            return (self._fused_code_of(rows, self.weight_q, shape, scale),
                    self._fused_code_of(rows, self.weight_k, shape, scale))
        z = rows.permute([self.ndim + 1, self.ndim] + list(range(self.ndim)))  # (R, H*D, extents...)
        return self._code_of(z, self.weight_q, shape, scale), self._code_of(z, self.weight_k, shape, scale)

    def expected_kernel(self, shape: List[int], realizations: Optional[int] = None) -> Tensor:
        """Exact E[sum_r Qbar[m] Kbar[m - lag]] for every lag: (H, D, 2L - 1) or (H, D, 2L1 - 1, 2L2 - 1),
        lag 0 in the middle: sqrt(R / D) sum_j weight_q[j] weight_k[j + lag]."""
        r = self.realizations if realizations is None else realizations
        self._check_shape("ConvSPE.expected_kernel", shape)
        check_positive("ConvSPE.expected_kernel", "realizations (R)", r)
        padding: List[int] = []
        for extent in shape[::-1]:  # F.pad lists the last axis first
            padding += [extent - 1, extent - 1]
        padded = F.pad(self.weight_k.flatten(0, 1).unsqueeze(0), padding)  # (1, H*D, S + 2(L - 1) ...)
        c = depthwise_correlate(padded, self.weight_q, self.algorithm).squeeze(0)  # (H*D, 2L - 1 ...)
        return c.reshape([self.heads, self.dim] + shape_of(c)[1:]) * math.sqrt(r / self.dim)
