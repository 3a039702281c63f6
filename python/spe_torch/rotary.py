"""Rotary positional encoding (RoPE, Su et al.), as spe's C++ spe::RotaryEncoding
(include/spe/encoding/rotary.h): the pair (x_2i, x_2i+1) of a query or key at position n turns by
the angle n theta_i, theta_i = base^(-2i / D), so that q_m . k_n depends on m - n only.
Length scaling, to evaluate beyond the training length L with s = factor >= 1:
  linear: theta_i / s (position interpolation, Chen et al. 2023)
  ntk:    base s^(D / (D - 2)) for base (NTK-aware: the highest frequency kept, the lowest / s)
  yarn:   (1 - g_i) theta_i / s + g_i theta_i, g_i = clamp((r_i - 1) / (32 - 1), 0, 1) with
          r_i = L theta_i / (2 pi) periods within L, and q, k scaled by 0.1 ln s + 1 (YaRN, Peng et al. 2023)."""
import math

import torch
from torch import Tensor, nn

from ._checks import check_floating, check_positive, shape_of

ROTARY_SCALINGS = ("none", "linear", "ntk", "yarn")


def check_scaling(dim: int, scaling: str, factor: float, original_length: int) -> None:
    """The C++ check_scaling: a finite factor >= 1, original_length for yarn, D >= 4 for ntk."""
    if scaling not in ROTARY_SCALINGS:
        raise ValueError(f"RotaryEncoding: scaling must be one of {', '.join(ROTARY_SCALINGS)}, got {scaling!r}")
    if not (factor >= 1.0 and math.isfinite(factor)):
        raise ValueError(f"RotaryEncoding: factor must be a finite value >= 1 (the evaluated length over the "
                         f"trained one), got {factor}")
    if scaling == "yarn" and original_length < 1:
        raise ValueError(f"RotaryEncoding: yarn scaling needs original_length, the training length, "
                         f"got {original_length}")
    if scaling == "ntk" and dim < 4:
        raise ValueError(f"RotaryEncoding: ntk scaling needs dim >= 4, got {dim}")


class RotaryEncoding(nn.Module):
    """dim: D, even; base > 1; scaling: "none", "linear", "ntk" or "yarn" with factor s >= 1 and,
    for yarn, original_length L. No parameters or buffers (an empty state_dict, as in C++)."""

    def __init__(self, dim: int, base: float = 10000.0, scaling: str = "none", factor: float = 1.0,
                 original_length: int = 0):
        super().__init__()
        check_positive("RotaryEncoding", "dim", dim)
        if dim % 2 != 0:
            raise ValueError(f"RotaryEncoding: dim must be even (features rotate in pairs), got {dim}")
        if not base > 1.0:
            raise ValueError(f"RotaryEncoding: base must be > 1, got {base}")
        self.dim, self.base = dim, float(base)
        self.set_scaling(scaling, factor, original_length)

    def extra_repr(self) -> str:
        scaled = f", scaling={self.scaling} x{self.factor}" if self.scaling != "none" else ""
        return f"dim={self.dim}, base={self.base}{scaled}"

    def set_scaling(self, scaling: str, factor: float, original_length: int = 0) -> None:
        """Changes the length scaling (e.g. of a trained model before evaluating longer sequences);
        nothing changes when the arguments are refused."""
        check_scaling(self.dim, scaling, float(factor), original_length)
        self.scaling, self.factor, self.original_length = scaling, float(factor), original_length

    def frequencies(self) -> Tensor:
        """theta_i after the scaling: (D / 2,) float64."""
        d, s = float(self.dim), self.factor
        base = self.base * s ** (d / (d - 2.0)) if self.scaling == "ntk" else self.base
        theta = torch.pow(base, -2.0 * torch.arange(self.dim // 2, dtype=torch.float64) / d)  # (D / 2,)
        if self.scaling == "linear":
            return theta / s
        if self.scaling != "yarn":
            return theta
        # YaRN's ramp: pairs with fewer than `low` periods within L are interpolated, those with
        # more than `high` kept, those between blended linearly.
        low, high = 1.0, 32.0
        periods = float(self.original_length) * theta / (2.0 * math.pi)
        kept = ((periods - low) / (high - low)).clamp(0.0, 1.0)
        return (1.0 - kept) * theta / s + kept * theta

    def _magnitude(self) -> float:
        """YaRN's temperature on q and k, each scaled by 0.1 ln s + 1 (their product by its square); else 1."""
        return 0.1 * math.log(self.factor) + 1.0 if self.scaling == "yarn" else 1.0

    def _check_x(self, where: str, x: Tensor) -> None:
        if x.dim() != 4 or x.size(3) != self.dim:
            raise ValueError(f"{where}: x must be (B, N, H, D) with D = {self.dim}, got shape {shape_of(x)}")
        check_floating(where, "x", x)

    def _turn(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: (B, N, H, D), positions: (N,) -> each pair turned by position x theta_i, angles in float64."""
        half = self.dim // 2
        angles = positions.to(torch.float64).unsqueeze(1) * self.frequencies().to(x.device)  # (N, D / 2)
        cos = (self._magnitude() * torch.cos(angles)).to(x.dtype).view(1, -1, 1, half)
        sin = (self._magnitude() * torch.sin(angles)).to(x.dtype).view(1, -1, 1, half)
        pairs = x.unflatten(3, [half, 2])  # (B, N, H, D / 2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], 4).flatten(3)

    def rotate(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: (B, N, H, D) at the given positions (N,) -> rotated x, same shape."""
        self._check_x("RotaryEncoding.rotate", x)
        if positions.dim() != 1 or positions.size(0) != x.size(1):
            raise ValueError(f"RotaryEncoding.rotate: positions must be (N,) with N = {x.size(1)}, "
                             f"got shape {shape_of(positions)}")
        return self._turn(x, positions)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """x: (B, N, H, D) at positions start .. start + N - 1 -> rotated x, same shape."""
        self._check_x("RotaryEncoding.forward", x)
        if start < 0:
            raise ValueError(f"RotaryEncoding.forward: start must be >= 0, got {start}")
        return self._turn(x, torch.arange(start, start + x.size(1), device=x.device))
