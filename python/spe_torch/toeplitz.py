"""A learned bias b_h(m - n) of each head on the relative distance, clipped to [-clip, clip] as
Shaw's, as spe's C++ spe::ToeplitzBias (include/spe/encoding/toeplitz.h): under kernelized
(linear) attention the weight of the pair (m, n) is multiplied by exp(b_h(m - n)), a Toeplitz
matrix applied by FFT (toeplitz_linear_attention with lag_bias; Luo et al., NeurIPS 2021); under
softmax, b is added to the scores (score_bias)."""
import torch
from torch import Tensor, nn

from ._checks import check_positive, shape_of


class ToeplitzBias(nn.Module):
    """heads: H, one bias per head; clip: distances beyond +-clip share the bias of +-clip.
    Parameter (the C++ state_dict name): bias (H, 2 clip + 1), b for lags -clip .. clip, starting
    at 0 (no position)."""

    def __init__(self, heads: int, clip: int = 32):
        super().__init__()
        check_positive("ToeplitzBias", "heads", heads)
        check_positive("ToeplitzBias", "clip", clip)
        self.heads, self.clip = heads, clip
        self.bias = nn.Parameter(torch.empty(heads, 2 * clip + 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zeros, as in C++."""
        with torch.no_grad():
            self.bias.zero_()

    def extra_repr(self) -> str:
        return f"heads={self.heads}, clip={self.clip}"

    def _bias_of(self, lags: Tensor) -> Tensor:
        """The clipped bias of every lag in `lags` (any shape, int64): (H, *lags.shape)."""
        picked = self.bias.index_select(1, (lags.clamp(-self.clip, self.clip) + self.clip).flatten())  # (H, lags)
        return picked.view([self.heads] + shape_of(lags))

    def lag_bias(self, length: int) -> Tensor:
        """b_h(lag) for lags -(length - 1) .. length - 1: (H, 2 length - 1)."""
        check_positive("ToeplitzBias.lag_bias", "length", length)
        return self._bias_of(torch.arange(-(length - 1), length, device=self.bias.device))

    def kernel(self, length: int) -> Tensor:
        """What a query at m sees of a key at n under linear attention, exp(b_h(m - n)): (H, 2 length - 1)."""
        return torch.exp(self.lag_bias(length))

    def score_bias(self, start: int, queries: int, keys: int) -> Tensor:
        """For softmax attention: b_h(m - n) for queries at start .. start + Nq - 1 and keys at
        0 .. Nk - 1: (H, Nq, Nk)."""
        if start < 0:
            raise ValueError(f"ToeplitzBias.score_bias: start must be >= 0, got {start}")
        check_positive("ToeplitzBias.score_bias", "queries", queries)
        check_positive("ToeplitzBias.score_bias", "keys", keys)
        m = torch.arange(start, start + queries, device=self.bias.device).unsqueeze(1)
        return self._bias_of(m - torch.arange(keys, device=self.bias.device).unsqueeze(0))
