"""Feature maps phi for linear attention, as spe's C++ spe::FeatureMap
(include/spe/attention/feature_maps.h): phi(q_m) . phi(k_n) replaces exp(q_m . k_n / sqrt(D)).
  elu:   phi(x) = elu(x) + 1                                                M = D
  relu:  phi(x) = relu(x)                                                   M = D
  favor: phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(M), x' = x / D^(1/4)         (FAVOR+)
         W: (M, D) positive orthogonal random features, E[phi(q) . phi(k)] = exp(q . k / sqrt(D))."""
import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_floating, shape_of

FEATURE_MAP_KINDS = ("elu", "relu", "favor")
FEATURE_ROLES = ("query", "key")


def orthogonal_random_features(features: int, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """M positive orthogonal random features in D dimensions: blocks of D orthonormal rows (QR of
    a Gaussian matrix, signs fixed so that it is Haar), each row scaled by the norm of an
    independent N(0, I_D) vector: (M, D), drawn in float64 in the C++ order."""
    if features <= 0 or dim <= 0:
        raise ValueError(f"orthogonal_random_features: features and dim must be positive, got {features} and {dim}")
    blocks: List[Tensor] = []
    for done in range(0, features, dim):
        q, r = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        blocks.append(q.t()[: min(dim, features - done)])
    norms = torch.randn(features, dim, dtype=torch.float64).norm(2, dim=1, keepdim=True)  # chi_D
    return (torch.cat(blocks, 0) * norms).to(dtype or torch.get_default_dtype())


def favor_features(x: Tensor, projection: Tensor, shift: Tensor) -> Tensor:
    """exp(x W^T - |x|^2 / 2 - shift) / sqrt(M), without input scaling; shift broadcasts. x: (..., D) -> (..., M)."""
    logits = torch.matmul(x, projection.t()) - x.pow(2).sum(-1, keepdim=True) / 2.0 - shift
    return torch.exp(logits) / math.sqrt(projection.size(0))


class FeatureMap(nn.Module):
    """kind: "elu", "relu" or "favor"; dim: D; features: M for favor (0: M = D); redraw_interval:
    favor, redraw after every n training steps (0: never); scale_inputs: favor, x' = x / D^(1/4).
    Buffer (the C++ state_dict name): projection (M, D), favor only."""

    def __init__(self, kind: str, dim: int, features: int = 0, redraw_interval: int = 0, scale_inputs: bool = True):
        super().__init__()
        if kind not in FEATURE_MAP_KINDS:
            raise ValueError(f"FeatureMap: kind must be one of {', '.join(FEATURE_MAP_KINDS)}, got {kind!r}")
        if dim <= 0:
            raise ValueError(f"FeatureMap: dim must be positive, got {dim}")
        if features < 0:
            raise ValueError(f"FeatureMap: features (M) must be positive (or 0 for M = D), got {features}")
        if redraw_interval < 0:
            raise ValueError(f"FeatureMap: redraw_interval must be >= 0 (0 = never), got {redraw_interval}")
        if kind != "favor" and features not in (0, dim):
            raise ValueError(f"FeatureMap: {kind} has M = D = {dim} features, got features = {features}")
        self.kind, self.dim, self.features = kind, dim, features if features > 0 else dim
        self.redraw_interval, self.scale_inputs = redraw_interval, scale_inputs
        projection = orthogonal_random_features(self.features, dim) if kind == "favor" else None
        self.register_buffer("projection", projection)

    def extra_repr(self) -> str:
        redraw = f", redraw_interval={self.redraw_interval}" if self.kind == "favor" else ""
        return f"{self.kind}, dim={self.dim}, features={self.features}{redraw}"

    def redraw(self) -> None:
        """New random features (favor; otherwise nothing to draw)."""
        if self.projection is not None:
            with torch.no_grad():
                self.projection.copy_(orthogonal_random_features(self.features, self.dim, self.projection.dtype))

    def after_training_step(self, steps_done: int) -> bool:
        """After each training step, with the steps done in all (resumed ones included): redraws when it is
        a multiple of redraw_interval, so a resumed run redraws where an uninterrupted one would. Returns
        whether it did."""
        if self.kind != "favor" or self.redraw_interval == 0 or steps_done % self.redraw_interval != 0:
            return False
        self.redraw()
        return True

    def forward(self, x: Tensor, role: str) -> Tensor:
        """x: (..., D) -> (..., M). role "query" or "key": for favor a query row is shifted by its
        own max before exp, a key by the constant max_m |w_m|^2 / 2, so that keys never overflow
        and batch, causal and token-by-token forms see the same key features."""
        if x.dim() < 1 or x.size(-1) != self.dim:
            raise ValueError(f"FeatureMap: x must be (..., {self.dim}), got shape {shape_of(x)}")
        check_floating("FeatureMap", "x", x)
        if role != "query" and role != "key":
            raise ValueError(f"FeatureMap: role must be 'query' or 'key', got '{role}'")
        projection = self.projection
        if projection is None:
            return F.elu(x) + 1.0 if self.kind == "elu" else F.relu(x)
        w = projection.to(x.dtype)
        xs = x / self.dim ** 0.25 if self.scale_inputs else x
        if role == "query":
            logits = torch.matmul(xs, w.t()) - xs.pow(2).sum(-1, keepdim=True) / 2.0
            shift = logits.max(-1, keepdim=True)[0].detach()
        else:
            shift = (w.pow(2).sum(-1).max() / 2.0).detach()
        return favor_features(xs, w, shift)
