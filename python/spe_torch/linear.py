"""Linear attention on feature-mapped queries and keys, as spe's C++ functions
(include/spe/attention/linear.h):
  out_m = phi(q_m)^T (sum_n phi(k_n) v_n^T) / max(phi(q_m)^T sum_n phi(k_n), eps)
non-causal (sums over every unmasked key) or causal (n <= m; the fused op on CPU), and the
positioned form (RoFormer's linear form, SPE or rotary on the features), where the numerator
compares positioned features psi and the normaliser the plain ones:
  out_m = sum_n (psi_q_m . psi_k_n) v_n / max(sum_n phi_q_m . phi_k_n, eps)."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import _library
from ._checks import check_floating, shape_of


def _check_4d(where: str, name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{where}: {name} must be 4-D (B, N, H, features), got shape {shape_of(x)}")
    check_floating(where, name, x)


def check_qkv(where: str, q: Tensor, k: Tensor, v: Tensor,
              names: Tuple[str, str, str] = ("phi_q", "phi_k", "v")) -> None:
    """q (B, Nq, H, M), k (B, Nk, H, M), v (B, Nk, H, Dv), floating point, one dtype; `names` for the messages."""
    _check_4d(where, names[0], q)
    _check_4d(where, names[1], k)
    _check_4d(where, names[2], v)
    if q.size(0) != k.size(0) or q.size(2) != k.size(2) or q.size(3) != k.size(3):
        raise ValueError(f"{where}: {names[0]} {shape_of(q)} and {names[1]} {shape_of(k)} "
                         f"must agree on B, H and features")
    if k.size(0) != v.size(0) or k.size(1) != v.size(1) or k.size(2) != v.size(2):
        raise ValueError(f"{where}: {names[1]} {shape_of(k)} and {names[2]} {shape_of(v)} must agree on B, Nk and H")
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"{where}: {names[0]}, {names[1]} and {names[2]} must share a dtype, "
                        f"got {q.dtype}, {k.dtype}, {v.dtype}")


def _check_eps(where: str, eps: float) -> None:
    if eps <= 0:
        raise ValueError(f"{where}: eps must be positive, got {eps}")


def _check_causal(where: str, q: Tensor, k: Tensor) -> None:
    if q.size(1) != k.size(1):
        raise ValueError(f"{where}: phi_q ({q.size(1)} positions) and phi_k ({k.size(1)}) must have the same length")


def _check_positioned(where: str, q: Tensor, k: Tensor, psi_q: Tensor, psi_k: Tensor) -> None:
    """psi_q (B, Nq, H, P) and psi_k (B, Nk, H, P) pair with phi_q and phi_k."""
    if psi_q.dim() != 4 or shape_of(psi_q)[:3] != shape_of(q)[:3]:
        raise ValueError(f"{where}: psi_q must be (B, Nq, H, P) with (B, Nq, H) of phi_q {shape_of(q)[:3]}, "
                         f"got shape {shape_of(psi_q)}")
    if psi_k.dim() != 4 or shape_of(psi_k)[:3] != shape_of(k)[:3] or psi_k.size(3) != psi_q.size(3):
        raise ValueError(f"{where}: psi_k must be (B, Nk, H, P) with (B, Nk, H) of phi_k {shape_of(k)[:3]} "
                         f"and P = {psi_q.size(3)} of psi_q, got shape {shape_of(psi_k)}")
    if psi_q.dtype != q.dtype or psi_k.dtype != q.dtype:
        raise TypeError(f"{where}: psi_q and psi_k must have phi_q's dtype {q.dtype}, got {psi_q.dtype}, {psi_k.dtype}")


def mask_keys(where: str, phi_k: Tensor, key_padding: Optional[Tensor]) -> Tensor:
    """Zeroes the features of padded keys. key_padding: (B, Nk) bool, True for real tokens."""
    if key_padding is None:
        return phi_k
    if key_padding.dtype != torch.bool or shape_of(key_padding) != shape_of(phi_k)[:2]:
        raise ValueError(f"{where}: key_padding must be (B, Nk) = {shape_of(phi_k)[:2]} bool, "
                         f"got shape {shape_of(key_padding)} {key_padding.dtype}")
    return phi_k * key_padding.to(phi_k.dtype)[:, :, None, None]


def _normalised_sums(psi_q: Tensor, psi_k: Tensor, phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float) -> Tensor:
    """Non-causal, keys already masked (psi = phi without positioned features) -> (B, Nq, H, Dv)."""
    kv = torch.einsum("bnhp,bnhd->bhpd", psi_k, v)                        # (B, H, P, Dv)
    numerator = torch.einsum("bnhp,bhpd->bnhd", psi_q, kv)                # (B, Nq, H, Dv)
    denominator = torch.einsum("bnhm,bhm->bnh", phi_q, phi_k.sum(1))      # (B, Nq, H)
    return numerator / denominator.clamp_min(eps).unsqueeze(-1)


def linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, key_padding: Optional[Tensor] = None,
                     eps: float = 1e-6) -> Tensor:
    """phi_q: (B, Nq, H, M), phi_k: (B, Nk, H, M), v: (B, Nk, H, Dv), key_padding: (B, Nk) bool
    or None -> (B, Nq, H, Dv)."""
    check_qkv("linear_attention", phi_q, phi_k, v)
    _check_eps("linear_attention", eps)
    keys = mask_keys("linear_attention", phi_k, key_padding)
    return _normalised_sums(phi_q, keys, phi_q, keys, v, eps)


def causal_linear_attention_quadratic(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = 1e-6) -> Tensor:
    """The causal form through its (B, H, N, N) similarities: for devices the fused op does not cover."""
    similarity = torch.einsum("bmhk,bnhk->bhmn", phi_q, phi_k).tril()
    numerator = torch.einsum("bhmn,bnhd->bmhd", similarity, v)
    return numerator / similarity.sum(-1).transpose(1, 2).clamp_min(eps).unsqueeze(-1)


def causal_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, key_padding: Optional[Tensor] = None,
                            eps: float = 1e-6, chunk: int = 64) -> Tensor:
    """Position m attends to n <= m. phi_q, phi_k: (B, N, H, M), v: (B, N, H, Dv) -> (B, N, H, Dv).
    On CPU (float32, float64) torch.ops.spe.causal_linear_attention: chunks of `chunk` positions,
    memory flat in N, its own backward."""
    check_qkv("causal_linear_attention", phi_q, phi_k, v)
    _check_eps("causal_linear_attention", eps)
    _check_causal("causal_linear_attention", phi_q, phi_k)
    if chunk <= 0:
        raise ValueError(f"causal_linear_attention: chunk must be positive, got {chunk}")
    keys = mask_keys("causal_linear_attention", phi_k, key_padding)
    fused = phi_q.device.type == "cpu" and (phi_q.dtype == torch.float32 or phi_q.dtype == torch.float64)
    if not fused:
        return causal_linear_attention_quadratic(phi_q, keys, v, eps)
    if not torch.jit.is_scripting():
        _library.load_library()
    return torch.ops.spe.causal_linear_attention(phi_q, keys, v, eps, chunk)


def causal_product(a: Tensor, b: Tensor, v: Tensor, chunk: int = 64) -> Tensor:
    """The unnormalised sum_{n <= m} (a_m . b_n) v_n, a, b: (B, N, H, P), v: (B, N, H, Dv) -> (B, N, H, Dv),
    in chunks of C positions: a masked C x C product inside a chunk, prefix sums of b_n v_n^T across."""
    check_qkv("causal_product", a, b, v, ("a", "b", "v"))
    if a.size(1) != b.size(1):
        raise ValueError(f"causal_product: a ({a.size(1)} positions) and b ({b.size(1)}) must have the same length")
    if chunk <= 0:
        raise ValueError(f"causal_product: chunk must be positive, got {chunk}")
    n = a.size(1)
    chunks = (n + chunk - 1) // chunk
    ab, bb, vb = _blocks(a, chunks, chunk), _blocks(b, chunks, chunk), _blocks(v, chunks, chunk)
    inside = torch.matmul(torch.matmul(ab, bb.transpose(-1, -2)).tril(), vb)  # (B, H, chunks, C, Dv)
    states = torch.matmul(bb.transpose(-1, -2), vb)                           # (B, H, chunks, P, Dv)
    out = inside + torch.matmul(ab, states.cumsum(2) - states)                # + the chunks before
    return out.permute(0, 2, 3, 1, 4).flatten(1, 2)[:, :n]


def _blocks(x: Tensor, chunks: int, chunk: int) -> Tensor:
    """(B, N, H, F) -> (B, H, chunks, C, F), zero rows after the end."""
    padded = torch.nn.functional.pad(x, [0, 0, 0, 0, 0, chunks * chunk - x.size(1)])
    return padded.unflatten(1, [chunks, chunk]).permute(0, 3, 1, 2, 4)


def linear_attention_positioned(phi_q: Tensor, phi_k: Tensor, v: Tensor, psi_q: Tensor, psi_k: Tensor,
                                key_padding: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """Non-causal with positioned numerator features psi_q: (B, Nq, H, P), psi_k: (B, Nk, H, P)
    (e.g. SPE or rotary applied to phi_q, phi_k) -> (B, Nq, H, Dv)."""
    where = "linear_attention_positioned"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_positioned(where, phi_q, phi_k, psi_q, psi_k)
    return _normalised_sums(psi_q, mask_keys(where, psi_k, key_padding), phi_q, mask_keys(where, phi_k, key_padding),
                            v, eps)


def causal_linear_attention_positioned(phi_q: Tensor, phi_k: Tensor, v: Tensor, psi_q: Tensor, psi_k: Tensor,
                                       key_padding: Optional[Tensor] = None, eps: float = 1e-6,
                                       chunk: int = 64) -> Tensor:
    """Causal with positioned numerator features: the numerator by causal_product, the
    normaliser by prefix sums of phi_k. Shapes as linear_attention_positioned, Nq = Nk."""
    where = "causal_linear_attention_positioned"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_causal(where, phi_q, phi_k)
    _check_positioned(where, phi_q, phi_k, psi_q, psi_k)
    numerator = causal_product(psi_q, mask_keys(where, psi_k, key_padding), v, chunk)  # (B, N, H, Dv)
    denominator = (phi_q * mask_keys(where, phi_k, key_padding).cumsum(1)).sum(-1)  # (B, N, H)
    return numerator / denominator.clamp_min(eps).unsqueeze(-1)


class LinearAttention(nn.Module):
    """linear_attention or causal_linear_attention as a module (no parameters).
    forward(phi_q (B, Nq, H, M), phi_k (B, Nk, H, M), v (B, Nk, H, Dv), key_padding (B, Nk) bool
    or None) -> (B, Nq, H, Dv)."""

    def __init__(self, causal: bool = False, eps: float = 1e-6, chunk: int = 64):
        super().__init__()
        if eps <= 0 or chunk <= 0:
            raise ValueError(f"LinearAttention: eps and chunk must be positive, got {eps} and {chunk}")
        self.causal, self.eps, self.chunk = causal, eps, chunk

    def extra_repr(self) -> str:
        return f"causal={self.causal}, eps={self.eps}, chunk={self.chunk}"

    def forward(self, phi_q: Tensor, phi_k: Tensor, v: Tensor, key_padding: Optional[Tensor] = None) -> Tensor:
        if self.causal:
            return causal_linear_attention(phi_q, phi_k, v, key_padding, self.eps, self.chunk)
        return linear_attention(phi_q, phi_k, v, key_padding, self.eps)
