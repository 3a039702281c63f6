"""Sinusoidal Stochastic Positional Encoding (sineSPE), as spe's C++ spe::SineSPE
(include/spe/encoding/sine_spe.h). For head h, feature d, sine k (f = sigmoid(freqs) / 2,
theta = offsets, lambda = softplus(gains)) and position t:
  Omega_q(t) = interleave_k [cos(2 pi f_k t + theta_k), sin(2 pi f_k t + theta_k)]   (2K)
  Omega_k(t) = interleave_k [cos(2 pi f_k t),           sin(2 pi f_k t)]             (2K)
  Z ~ N(0, 1) (H, D, 2K, R) / sqrt(2K), row j scaled by lambda_{j/2}
  Qbar(t) = Omega_q(t) Z / (R D)^(1/4),   Kbar(t) = Omega_k(t) Z / (R D)^(1/4)
so E[sum_r Qbar(m) Kbar(n)] = sqrt(R / D) / (2K) sum_k lambda_k^2 cos(2 pi f_k (m - n) + theta_k)."""
import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _library
from ._checks import check_heads, check_positive, check_same_dtype, fused_kernel_takes

SINE_INITS = ("reference", "spread")
SINE_NOISES = ("gaussian", "orthogonal")


class SineCode(NamedTuple):
    """One draw of a sineSPE code, kept as its factors (C++ SineCodeFactors). For position n:
      code[n, h, d, :] = gate_scale[h, d] sum_j Omega_j(n) weights[h, d, j, :] + gate_shift[h, d, :]
    with Omega from the frequencies and, for Qbar, the offsets. It covers every position."""
    frequencies: Tensor           # (H, D, K) float64: f = sigmoid(freqs) / 2
    offsets: Tensor               # (H, D, K) float64: theta of the query side
    weights: Tensor               # (H, D, 2K, R): Z lambda / sqrt(2K) / (R D)^(1/4)
    gate_scale: Optional[Tensor]  # (H, D), None for 1
    gate_shift: Optional[Tensor]  # (H, D, R), None for 0
    gate_noise: Optional[Tensor] = None  # (H, D, R): a gate's noise drawn with the code (SineSPE(gate_noise=True))


def _omega(frequencies: Tensor, offsets: Tensor, positions: Tensor, query_side: bool, dtype: torch.dtype) -> Tensor:
    """(N, H, D, 2K): [cos, sin] of 2 pi f t (+ theta for queries) interleaved per sine, the
    phases computed in float64 (2 pi f t loses its precision in float32 at long positions)."""
    phases = 2.0 * math.pi * frequencies.unsqueeze(0) * positions.to(torch.float64).view(-1, 1, 1, 1)  # (N, H, D, K)
    if query_side:
        phases = phases + offsets.unsqueeze(0)
    return torch.stack([phases.cos(), phases.sin()], -1).flatten(-2).to(dtype)


def code_side(code: SineCode, positions: Tensor, query_side: bool) -> Tensor:
    """The materialised Qbar (query_side) or Kbar at positions (N,): (N, H, D, R)."""
    omega = _omega(code.frequencies, code.offsets, positions, query_side, code.weights.dtype)
    out = torch.einsum("nhdj,hdjr->nhdr", omega, code.weights)
    scale, shift = code.gate_scale, code.gate_shift
    if scale is not None:
        out = out * scale.unsqueeze(-1)
    if shift is not None:
        out = out + shift
    return out


def sine_code_at(code: SineCode, positions: Tensor) -> Tuple[Tensor, Tensor]:
    """(Qbar, Kbar) at positions (N,), each (N, H, D, R): the code the fused filter never builds."""
    return code_side(code, positions, True), code_side(code, positions, False)


def filter_with_code(x: Tensor, code: SineCode, query_side: bool, start: int = 0) -> Tensor:
    """x: (B, N, H, D) at positions start .. start + N - 1 -> (B, N, H, R):
    out[b, n, h, :] = sum_d x[b, n, h, d] code[start + n, h, d, :], with Qbar when query_side,
    Kbar otherwise. On CPU (float32, float64) the fused torch.ops.spe.sine_spe_filter, which never
    holds the code and is differentiable with respect to x and every factor; elsewhere through
    the materialised code."""
    where = "spe_torch.filter_with_code"
    check_heads(where, "x", x, code.weights.size(0), code.weights.size(1))
    check_same_dtype(where, "x", x, "the code's weights", code.weights)
    if start < 0:
        raise ValueError(f"{where}: start must be >= 0, got {start}")
    if not fused_kernel_takes(x):
        positions = torch.arange(start, start + x.size(1), device=x.device)
        return torch.einsum("bnhd,nhdr->bnhr", x, code_side(code, positions, query_side))
    if not torch.jit.is_scripting():
        _library.load_library()
    phases = code.offsets if query_side else torch.zeros_like(code.offsets)
    return torch.ops.spe.sine_spe_filter(x, code.frequencies, phases, code.weights, code.gate_scale,
                                         code.gate_shift, start)


def spread_frequencies(heads: int, dim: int, sines: int) -> Tensor:
    """Raw frequencies whose angular frequencies 2 pi sigmoid(freqs) / 2 are 10000^(-i / (D K)),
    i = d K + k, the same for every head: (H, D, K)."""
    i = torch.arange(dim * sines, dtype=torch.float64)
    f = torch.pow(10000.0, -i / (dim * sines)) / (2.0 * math.pi)  # cycles per position, < 1/2
    return torch.logit(2.0 * f).view(1, dim, sines).expand(heads, dim, sines).to(torch.get_default_dtype())


def orthogonal_rows(heads: int, rows: int, group: int, r: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """noise "orthogonal" (C++ detail::orthogonal_rows): (H, rows, R), each head's rows in blocks of
    whole groups of `group` rows (R rows when one group does not fit), each block rows of a
    Haar-random R x R orthogonal matrix scaled to norm sqrt(R); blocks independent."""
    block = (r // group) * group if r >= group else r
    blocks = (rows + block - 1) // block
    gaussian = torch.randn([heads, blocks, r, r], dtype=torch.float64, device=device)
    q, upper = torch.linalg.qr(gaussian)
    haar = q * torch.sign(torch.diagonal(upper, 0, -2, -1)).unsqueeze(-2)
    picked = haar.transpose(-1, -2)[:, :, :block].flatten(1, 2)[:, :rows]
    return (picked * math.sqrt(r)).to(dtype)


class SineSPE(nn.Module):
    """sineSPE with the parametrisation and initialisation of the authors' code, as spe::SineSPE.

    Parameters (the C++ state_dict names): freqs, offsets, gains, each (H, D, K).
    init: "reference" (freqs ~ N(0, 1) - 4) or "spread" (geometric frequencies, as rotary's).
    noise: "gaussian" (i.i.d. weights, the paper's) or "orthogonal" (the D 2K rows of a head orthogonal
    in blocks of whole features, norm sqrt(R): each feature's kernel exact in every draw once
    R >= 2K, the whole score once R >= 2K D; C++ SPENoise).
    gate_noise: draw, with each feature's 2K rows, one more for a gated SPEFilter's noise (in the same
    orthogonal block when noise is "orthogonal": the whole gated code exact once R >= (2K + 1) D).
    Draws use torch's default generator (torch.manual_seed), as torch.nn.Dropout does."""

    def __init__(self, heads: int, dim: int, sines: int = 1, realizations: int = 256, init: str = "reference",
                 noise: str = "gaussian", gate_noise: bool = False):
        super().__init__()
        for name, value in (("heads", heads), ("dim", dim), ("sines (K)", sines), ("realizations (R)", realizations)):
            check_positive("SineSPE", name, value)
        if init not in SINE_INITS:
            raise ValueError(f"SineSPE: init must be one of {', '.join(SINE_INITS)}, got {init!r}")
        if noise not in SINE_NOISES:
            raise ValueError(f"SineSPE: noise must be one of {', '.join(SINE_NOISES)}, got {noise!r}")
        self.heads, self.dim, self.sines, self.realizations, self.init = heads, dim, sines, realizations, init
        self.noise, self.gate_noise = noise, gate_noise
        self.freqs = nn.Parameter(torch.empty(heads, dim, sines))
        self.offsets = nn.Parameter(torch.empty(heads, dim, sines))
        self.gains = nn.Parameter(torch.empty(heads, dim, sines))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """freqs ~ N(0, 1) - 4 (or spread), offsets ~ N(0, 1), gains ~ N(0, 1) / (sqrt(|gains|_K) / 2),
        drawn in the C++ order: after torch.manual_seed(s) they equal spe's after at::manual_seed(s)."""
        shape = self.freqs.shape
        with torch.no_grad():
            freqs = torch.randn(shape) - 4.0
            if self.init == "spread":
                freqs = spread_frequencies(self.heads, self.dim, self.sines)
            offsets, gains = torch.randn(shape), torch.randn(shape)
            gains = gains / (gains.norm(2, dim=-1, keepdim=True).sqrt() / 2.0)
            for parameter, value in ((self.freqs, freqs), (self.offsets, offsets), (self.gains, gains)):
                parameter.copy_(value)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, dim={self.dim}, sines={self.sines}, realizations={self.realizations}, "
                f"init={self.init}, noise={self.noise}, gate_noise={self.gate_noise}")

    def sample_noise(self, realizations: Optional[int] = None) -> Tensor:
        """Z scaled by the gains: (H, D, 2K, R), differentiable with respect to the gains; with
        gate_noise (H, D, 2K + 1, R), the last row per feature the gate's noise, unscaled. Keep it to
        extend a code position by position: factors(noise) is the same code at every position."""
        r = self.realizations if realizations is None else realizations
        check_positive("SineSPE.sample_noise", "realizations (R)", r)
        two_k = 2 * self.sines
        rows = two_k + (1 if self.gate_noise else 0)
        if self.noise == "orthogonal":
            z = orthogonal_rows(self.heads, self.dim * rows, rows, r, self.gains.dtype,
                                self.gains.device).view(self.heads, self.dim, rows, r)
        else:
            z = torch.randn([self.heads, self.dim, rows, r], dtype=self.gains.dtype, device=self.gains.device)
        scale = F.softplus(self.gains).repeat_interleave(2, -1) / math.sqrt(two_k)  # (H, D, 2K)
        if self.gate_noise:
            scale = F.pad(scale, (0, 1), value=1.0)
        return z * scale.unsqueeze(-1)

    def factors(self, noise: Tensor) -> SineCode:
        """The factors of the code of this noise (H, D, 2K [+ 1], R), ungated (C++ SineSPE::code)."""
        two_k = 2 * self.sines
        if (noise.dim() != 4 or noise.size(0) != self.heads or noise.size(1) != self.dim
                or noise.size(2) not in (two_k, two_k + 1)):
            raise ValueError(f"SineSPE.factors: noise must be (H, D, 2K, R) or, with the gate's row, (H, D, 2K + 1, R) "
                             f"= ({self.heads}, {self.dim}, {two_k} [+ 1], R), got shape {list(noise.shape)}")
        scale = float(noise.size(3) * self.dim) ** 0.25
        gate_noise = noise[:, :, two_k] if noise.size(2) > two_k else None
        return SineCode(torch.sigmoid(self.freqs.to(torch.float64)) / 2.0, self.offsets.to(torch.float64),
                        noise[:, :, :two_k].to(self.freqs.dtype) / scale, None, None, gate_noise)

    def draw(self, realizations: Optional[int] = None) -> SineCode:
        """A fresh code of R realizations (C++ forward(length)); SPEFilter gates and applies it."""
        return self.factors(self.sample_noise(realizations))

    def forward(self, q: Tensor, k: Tensor, realizations: Optional[int] = None,
                start: int = 0) -> Tuple[Tensor, Tensor]:
        """Draws a code and filters with it, ungated (use SPEFilter for the gate).
        q, k: (B, N, H, D) at positions start .. start + N - 1 -> (q_hat, k_hat): (B, N, H, R)."""
        where = "SineSPE.forward"
        check_heads(where, "q", q, self.heads, self.dim)
        check_heads(where, "k", k, self.heads, self.dim)
        check_same_dtype(where, "q", q, "the parameters", self.freqs)
        check_same_dtype(where, "k", k, "the parameters", self.freqs)
        code = self.draw(realizations)
        return filter_with_code(q, code, True, start), filter_with_code(k, code, False, start)

    def exact_features(self, x: Tensor, query_side: bool, start: int = 0) -> Tensor:
        """The noise-free factorisation of the kernel. x: (B, N, H, D) at positions start ..
        start + N - 1 -> (B, N, H, D, 2K): out[b, n, h, d, j] = x[b, n, h, d] lambda_{j/2} Omega_j(n) / sqrt(2K),
        Omega_q when query_side. Summed over d and j, a query's features times a key's give
        sum_d q_md k_nd P_d(m - n) exactly, P_d(lag) = (1 / 2K) sum_k lambda_k^2 cos(2 pi f_k lag + theta_k)."""
        check_heads("SineSPE.exact_features", "x", x, self.heads, self.dim)
        return x.unsqueeze(-1) * self.exact_coefficients(x.size(1), query_side, start, x.dtype).unsqueeze(0)

    def exact_coefficients(self, length: int, query_side: bool, start: int = 0,
                           dtype: Optional[torch.dtype] = None) -> Tensor:
        """What multiplies x in exact_features: (N, H, D, 2K) = lambda_{j/2} Omega_j(n) / sqrt(2K) at
        positions start .. start + length - 1, in dtype (the parameters' by default)."""
        if length < 0:
            raise ValueError(f"SineSPE.exact_coefficients: length must be >= 0, got {length}")
        if start < 0:
            raise ValueError(f"SineSPE.exact_coefficients: start must be >= 0, got {start}")
        dtype = self.freqs.dtype if dtype is None else dtype
        positions = torch.arange(start, start + length, device=self.freqs.device)
        frequencies = torch.sigmoid(self.freqs.to(torch.float64)) / 2.0
        omega = _omega(frequencies, self.offsets.to(torch.float64), positions, query_side, dtype)  # (N, H, D, 2K)
        lam = F.softplus(self.gains).repeat_interleave(2, -1).to(dtype) / math.sqrt(2 * self.sines)  # (H, D, 2K)
        return omega * lam

    def expected_kernel(self, length: int, realizations: Optional[int] = None) -> Tensor:
        """Exact E[sum_r Qbar[m, h, d, r] Kbar[m - lag, h, d, r]] for lag in [-(length - 1), length - 1]:
        (H, D, 2 length - 1), all constants included."""
        r = self.realizations if realizations is None else realizations
        check_positive("SineSPE.expected_kernel", "length", length)
        check_positive("SineSPE.expected_kernel", "realizations (R)", r)
        lags = torch.arange(-(length - 1), length, dtype=torch.float64, device=self.freqs.device)
        f = torch.sigmoid(self.freqs.to(torch.float64)) / 2.0  # (H, D, K)
        theta = self.offsets.to(torch.float64).unsqueeze(-1)
        cosines = torch.cos(2.0 * math.pi * f.unsqueeze(-1) * lags + theta)  # (H, D, K, lags)
        terms = F.softplus(self.gains).pow(2).unsqueeze(-1) * cosines.to(self.freqs.dtype)
        return terms.sum(2) * (math.sqrt(r / self.dim) / (2.0 * self.sines))
