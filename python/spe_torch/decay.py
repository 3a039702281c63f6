"""Exponential decay of the attention weight with the distance, as spe's C++ spe::Decay
(include/spe/encoding/decay.h; RetNet, Sun et al. 2023; causal ALiBi has the same shape): head h
weighs the pair (m, n) by g_h^|m - n|, 0 < g_h < 1, g_h = sigmoid(logits_h). Exact under linear
attention (decayed_linear_attention, with log_decay()) and under softmax (score_bias)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_positive


def initial_logits(heads: int) -> Tensor:
    """logit(g_h), g_h = 1 - 2^-(5 + 7 h / (H - 1)) (H = 1: 1 - 2^-5), computed in float64: (H,).
    RetNet's 1 - 2^-(5..12) for 8 heads: heads that look from about 32 to about 4,096 positions back."""
    h = torch.arange(heads, dtype=torch.float64)
    exponents = torch.full([1], 5.0, dtype=torch.float64) if heads == 1 else 5.0 + 7.0 * h / (heads - 1)
    g = 1.0 - torch.pow(2.0, -exponents)
    return torch.log(g / (1.0 - g))


class Decay(nn.Module):
    """heads: H, one decay per head; learnable: train the decays. logits (H,) (the C++ state_dict
    name) is a parameter when learnable, else a buffer: saved with the model, never handed to an
    optimizer."""

    def __init__(self, heads: int, learnable: bool = False):
        super().__init__()
        check_positive("Decay", "heads", heads)
        self.heads, self.learnable = heads, learnable
        if learnable:
            self.logits = nn.Parameter(torch.empty(heads))
        else:
            self.register_buffer("logits", torch.empty(heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The starting decays, as in C++."""
        with torch.no_grad():
            self.logits.copy_(initial_logits(self.heads))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, learnable={self.learnable}"

    def log_decay(self) -> Tensor:
        """log g: (H,), every entry < 0."""
        return F.logsigmoid(self.logits)

    def kernel(self, length: int) -> Tensor:
        """g_h^|lag| for lags -(length - 1) .. length - 1: (H, 2 length - 1)."""
        check_positive("Decay.kernel", "length", length)
        distances = torch.arange(-(length - 1), length, dtype=self.logits.dtype, device=self.logits.device).abs()
        return torch.exp(self.log_decay().unsqueeze(1) * distances)

    def score_bias(self, start: int, queries: int, keys: int) -> Tensor:
        """For softmax attention: |m - n| log g_h for queries at start .. start + Nq - 1 and keys at
        0 .. Nk - 1: (H, Nq, Nk), added to the scaled scores."""
        if start < 0:
            raise ValueError(f"Decay.score_bias: start must be >= 0, got {start}")
        check_positive("Decay.score_bias", "queries", queries)
        check_positive("Decay.score_bias", "keys", keys)
        m = torch.arange(start, start + queries, dtype=self.logits.dtype, device=self.logits.device).unsqueeze(1)
        n = torch.arange(keys, dtype=self.logits.dtype, device=self.logits.device).unsqueeze(0)
        return self.log_decay().view(-1, 1, 1) * (m - n).abs()
