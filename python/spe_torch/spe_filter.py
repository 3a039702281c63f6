"""The SPE filter with its optional gate, as spe's C++ spe::SPEFilter
(include/spe/encoding/spe_filter.h): qhat = sum_d q_d Qbar'_d, khat = sum_d k_d Kbar'_d with
  Qbar' = sqrt(1 - s) Qbar + sqrt(s) eps,   Kbar' = sqrt(1 - s) Kbar + sqrt(s) eps,   s = sigmoid(gate)
and eps ~ N(0, 1) (H, D, R) / (D R)^(1/4), one draw for every position, so that
E[sum_r Qbar'_m Kbar'_n] = (1 - s) P_d(m - n) + s sqrt(R / D): the gate mixes the positional
kernel with a position-free constant."""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import _library
from ._checks import check_heads, check_positive, check_same_dtype, check_same_shape, fused_kernel_takes, shape_of
from .sine_spe import SINE_NOISES, SineCode, filter_with_code, orthogonal_rows


def _apply_code(x: Tensor, code: Tensor) -> Tensor:
    """x (B, N, H, D) filtered by the first N rows of code (N' >= N, H, D, R) -> (B, N, H, R): on CPU (float32,
    float64) torch.ops.spe.apply_spe_code, one small product per (position, head); an einsum elsewhere."""
    if fused_kernel_takes(x):
        if not torch.jit.is_scripting():
            _library.load_library()
        return torch.ops.spe.apply_spe_code(x, code)
    return torch.einsum("bnhd,nhdr->bnhr", x, code[:x.size(1)])


def _scaled_gate_noise(eps: Tensor) -> Tensor:
    """eps (H, D, R) with entries of variance 1 -> the gate's noise eps / (D R)^(1/4) (C++'s scaled_gate_noise)."""
    return eps / float(eps.size(1) * eps.size(2)) ** 0.25


class SPEFilter(nn.Module):
    """Parameter (the C++ state_dict name): gate (H, D), only when gated.
    gate_mean: the gate starts at N(gate_mean, 1); s = sigmoid(gate) is each feature's share of the
    position-free constant (0, the reference's: s about 0.5; -3: about 0.05).
    Gate noise comes from torch's default generator (torch.manual_seed)."""

    def __init__(self, heads: int, dim: int, gated: bool = True, noise: str = "gaussian", gate_mean: float = 0.0):
        super().__init__()
        check_positive("SPEFilter", "heads", heads)
        check_positive("SPEFilter", "dim", dim)
        if noise not in SINE_NOISES:
            raise ValueError(f"SPEFilter: noise must be one of {', '.join(SINE_NOISES)}, got {noise!r}")
        if not math.isfinite(gate_mean):
            raise ValueError(f"SPEFilter: gate_mean must be finite, got {gate_mean}")
        self.heads, self.dim, self.gated, self.noise, self.gate_mean = heads, dim, gated, noise, gate_mean
        if gated:
            self.gate = nn.Parameter(torch.empty(heads, dim))
        else:
            self.register_parameter("gate", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """gate ~ N(gate_mean, 1), as in C++."""
        if self.gate is not None:
            with torch.no_grad():
                self.gate.copy_(torch.randn(self.heads, self.dim) + self.gate_mean)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dim={self.dim}, gated={self.gated}, noise={self.noise}, gate_mean={self.gate_mean}"

    def sample_gate_noise(self, realizations: int, dtype: torch.dtype) -> Optional[Tensor]:
        """eps ~ N(0, 1) (H, D, R) / (D R)^(1/4) for one code, its D rows orthogonal with norm sqrt(R)
        when noise is "orthogonal" (blocks of R rows when D > R); None when not gated."""
        check_positive("SPEFilter.sample_gate_noise", "realizations (R)", realizations)
        gate = self.gate
        if gate is None:
            return None
        if self.noise == "orthogonal":
            eps = orthogonal_rows(self.heads, self.dim, 1, realizations, dtype, gate.device)
        else:
            eps = torch.randn([self.heads, self.dim, realizations], dtype=dtype, device=gate.device)
        return _scaled_gate_noise(eps)

    def gate_noise_for(self, code: SineCode) -> Optional[Tensor]:
        """The gate's noise for this code: its own (drawn with it, SineSPE(gate_noise=True)) scaled as
        sample_gate_noise's, else a fresh draw; None when not gated."""
        if self.gate is None:
            return None
        own = code.gate_noise
        if own is not None:
            return _scaled_gate_noise(own.to(code.weights.dtype))
        return self.sample_gate_noise(code.weights.size(3), code.weights.dtype)

    def _keep_and_noise(self, gate: Tensor, gate_noise: Optional[Tensor], realizations: int,
                        dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """sqrt(1 - s): (H, D) and sqrt(s) eps: (H, D, R), checking the noise against the code."""
        expected = [self.heads, self.dim, realizations]
        if gate_noise is None or shape_of(gate_noise) != expected or gate_noise.dtype != dtype:
            raise ValueError(f"SPEFilter: gate_noise must be (H, D, R) = {expected} of the code's dtype {dtype}")
        s = torch.sigmoid(gate).to(dtype)
        return torch.sqrt(1.0 - s), torch.sqrt(s).unsqueeze(-1) * gate_noise

    def _check_code(self, where: str, heads: int, dim: int) -> None:
        if heads != self.heads or dim != self.dim:
            raise ValueError(f"{where}: the code has (H, D) = ({heads}, {dim}) but the filter was built for "
                             f"({self.heads}, {self.dim})")

    def gated_code(self, code: SineCode, gate_noise: Optional[Tensor]) -> SineCode:
        """The code after the gate, still factored: keep (a P + c) + noise = (keep a) P + (keep c + noise).
        Unchanged when not gated."""
        weights = code.weights
        self._check_code("SPEFilter.gated_code", weights.size(0), weights.size(1))
        gate = self.gate
        if gate is None:
            return code
        keep, noise = self._keep_and_noise(gate, gate_noise, weights.size(3), weights.dtype)
        scale, shift = code.gate_scale, code.gate_shift
        new_scale = keep if scale is None else keep * scale
        new_shift = noise if shift is None else keep.unsqueeze(-1) * shift + noise
        return SineCode(code.frequencies, code.offsets, weights, new_scale, new_shift, None)

    def gated_materialised(self, qbar: Tensor, kbar: Tensor, gate_noise: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """The gate on a materialised code (qbar, kbar: (N, H, D, R), e.g. ConvSPE's)."""
        where = "SPEFilter.gated_materialised"
        check_same_shape(where, "qbar", qbar, "kbar", kbar)
        if qbar.dim() != 4:
            raise ValueError(f"{where}: qbar must be (N, H, D, R), got shape {shape_of(qbar)}")
        self._check_code(where, qbar.size(1), qbar.size(2))
        gate = self.gate
        if gate is None:
            return qbar, kbar
        keep, noise = self._keep_and_noise(gate, gate_noise, qbar.size(3), qbar.dtype)
        return keep.unsqueeze(-1) * qbar + noise, keep.unsqueeze(-1) * kbar + noise

    def _check_inputs(self, where: str, q: Tensor, k: Tensor, code_name: str, code: Tensor) -> None:
        check_same_shape(where, "q", q, "k", k)
        check_heads(where, "q", q, self.heads, self.dim)
        check_same_dtype(where, "q", q, code_name, code)
        check_same_dtype(where, "k", k, code_name, code)

    def forward(self, q: Tensor, k: Tensor, code: SineCode, start: int = 0) -> Tuple[Tensor, Tensor]:
        """Gates a sine code (a fresh gate noise) and filters with the fused op.
        q, k: (B, N, H, D) at positions start .. start + N - 1 -> (q_hat, k_hat): (B, N, H, R)."""
        self._check_inputs("SPEFilter.forward", q, k, "the code's weights", code.weights)
        gated = self.gated_code(code, self.gate_noise_for(code))
        return filter_with_code(q, gated, True, start), filter_with_code(k, gated, False, start)

    def forward_materialised(self, q: Tensor, k: Tensor, qbar: Tensor, kbar: Tensor) -> Tuple[Tensor, Tensor]:
        """The same with a materialised code (qbar, kbar: (>= N, H, D, R)) -> (B, N, H, R) each."""
        where = "SPEFilter.forward_materialised"
        self._check_inputs(where, q, k, "qbar", qbar)
        if qbar.dim() != 4 or qbar.size(0) < q.size(1):
            raise ValueError(f"{where}: qbar must be (N', H, D, R) with N' >= N = {q.size(1)}, "
                             f"got shape {shape_of(qbar)}")
        qbar, kbar = self.gated_materialised(qbar, kbar, self.sample_gate_noise(qbar.size(3), qbar.dtype))
        return _apply_code(q, qbar), _apply_code(k, kbar)

    def gate_features(self, x: Tensor, features: Tensor) -> Tensor:
        """The gate on exact features: x (B, N, H, D), features (B, N, H, D, J) (SineSPE.exact_features)
        -> (B, N, H, D J) ungated, (B, N, H, D (J + 1)) gated: [sqrt(1 - s_d) features_d, sqrt(s_d) x_d] per d."""
        where = "SPEFilter.gate_features"
        check_heads(where, "x", x, self.heads, self.dim)
        if features.dim() != 5 or shape_of(features)[:4] != shape_of(x):
            raise ValueError(f"{where}: features must be (B, N, H, D, J) with (B, N, H, D) = {shape_of(x)}, "
                             f"got shape {shape_of(features)}")
        gate = self.gate
        if gate is None:
            return features.flatten(3)
        s = torch.sigmoid(gate).to(x.dtype).unsqueeze(-1)  # (H, D, 1)
        return torch.cat([torch.sqrt(1.0 - s) * features, torch.sqrt(s) * x.unsqueeze(-1)], -1).flatten(3)

    def gate_coefficients(self, coefficients: Tensor) -> Tensor:
        """The same gate on what multiplies x in such features (SineSPE.exact_coefficients): (N, H, D, J)
        -> (N, H, D, J) ungated, (N, H, D, J + 1) gated: [sqrt(1 - s_d) coefficients_d, sqrt(s_d)] per d;
        (x.unsqueeze(-1) * it).flatten(3) is gate_features(x, x.unsqueeze(-1) * coefficients) in one product."""
        if coefficients.dim() != 4 or coefficients.size(1) != self.heads or coefficients.size(2) != self.dim:
            raise ValueError(f"SPEFilter.gate_coefficients: coefficients must be (N, H, D, J) with (H, D) = "
                             f"({self.heads}, {self.dim}), got shape {shape_of(coefficients)}")
        gate = self.gate
        if gate is None:
            return coefficients
        s = torch.sigmoid(gate).to(coefficients.dtype).unsqueeze(-1)  # (H, D, 1)
        return torch.cat([torch.sqrt(1.0 - s) * coefficients, torch.sqrt(s).expand_as(coefficients[..., :1])], -1)

    def expected_kernel(self, ungated: Tensor, realizations: int) -> Tensor:
        """(1 - s) P + s sqrt(R / D) from the ungated kernel P (H, D, lags...); P when not gated."""
        check_positive("SPEFilter.expected_kernel", "realizations (R)", realizations)
        if ungated.dim() < 2 or ungated.size(0) != self.heads or ungated.size(1) != self.dim:
            raise ValueError(f"SPEFilter.expected_kernel: ungated must be (H, D, lags...) with (H, D) = "
                             f"({self.heads}, {self.dim}), got shape {shape_of(ungated)}")
        gate = self.gate
        if gate is None:
            return ungated
        s = torch.sigmoid(gate).to(ungated.dtype).view(shape_of(gate) + [1] * (ungated.dim() - 2))
        return (1.0 - s) * ungated + s * math.sqrt(realizations / self.dim)
