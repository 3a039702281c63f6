"""Softmax (quadratic) attention with a causal mask, key padding and an additive score bias, as
spe's C++ softmax_attention (include/spe/attention/softmax.h) without Shaw's relative tables:
  p_mn = softmax_n(q_m . k_n / sqrt(D) + score_bias[h, m, n]) over the allowed keys,
  out_m = sum_n p_mn v_n,
a query with no allowed key giving zeros (never NaN). Decay.score_bias and ToeplitzBias.score_bias
give the bias."""
import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import shape_of
from .linear import check_key_padding, check_qkv


def _allowed(q: Tensor, k: Tensor, causal: bool, key_padding: Optional[Tensor]) -> Optional[Tensor]:
    """Allowed (query, key) pairs: (B or 1, 1, Nq, Nk) bool, None when every pair is. Causal: query
    i sees keys j <= i, aligned at the end when Nq < Nk."""
    nq, nk = q.size(1), k.size(1)
    allowed: Optional[Tensor] = None
    if causal:
        i = torch.arange(nq, device=q.device).unsqueeze(1) + (nk - nq)
        allowed = (torch.arange(nk, device=q.device).unsqueeze(0) <= i).view(1, 1, nq, nk)
    if key_padding is not None:
        keys = key_padding.to(q.device).view(key_padding.size(0), 1, 1, nk)
        allowed = keys if allowed is None else allowed & keys
    return allowed


def _masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    """A stable softmax over the allowed keys that gives zeros, not NaN, to a row without any."""
    scores = scores.masked_fill(~allowed, -math.inf)
    row_max = scores.max(-1, keepdim=True)[0]
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max).detach()
    e = torch.exp(scores - row_max)
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, key_padding: Optional[Tensor] = None,
                      score_bias: Optional[Tensor] = None) -> Tensor:
    """q: (B, Nq, H, D), k: (B, Nk, H, D), v: (B, Nk, H, Dv), key_padding: (B, Nk) bool (True =
    real token) or None, score_bias: (H, Nq, Nk) or None -> (B, Nq, H, Dv)."""
    where = "softmax_attention"
    check_qkv(where, q, k, v, ("q", "k", "v"))
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.size(3))  # (B, H, Nq, Nk)
    if score_bias is not None:
        expected = [q.size(2), q.size(1), k.size(1)]
        if shape_of(score_bias) != expected:
            raise ValueError(f"{where}: score_bias must be (H, Nq, Nk) = {expected}, got shape {shape_of(score_bias)}")
        if score_bias.dtype != q.dtype:
            raise TypeError(f"{where}: score_bias must have the inputs' dtype {q.dtype}, got {score_bias.dtype}")
        scores = scores + score_bias
    if key_padding is not None:
        check_key_padding(where, key_padding, k)
    allowed = _allowed(q, k, causal, key_padding)
    weights = torch.softmax(scores, -1) if allowed is None else _masked_softmax(scores, allowed)
    return torch.einsum("bhij,bjhd->bihd", weights, v)
