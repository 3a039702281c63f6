"""Linear attention on feature-mapped queries and keys, as spe's C++ functions
(include/spe/attention/linear.h):
  out_m = phi(q_m)^T (sum_n phi(k_n) v_n^T) / max(phi(q_m)^T sum_n phi(k_n), eps)
non-causal (sums over every unmasked key) or causal (n <= m; the fused op on CPU), and the
positioned form (RoFormer's linear form, SPE or rotary on the features), where the numerator
compares positioned features psi and the normaliser the plain ones:
  out_m = sum_n (psi_q_m . psi_k_n) v_n / max(sum_n phi_q_m . phi_k_n, eps),
and the forms that weigh the pair (m, n) by a function w_h(m - n) in numerator and normaliser:
g_h^|m - n| (decayed_linear_attention, a chunked scan) or exp(b_h(m - n)) (toeplitz_linear_attention,
FFT; clipped_toeplitz_linear_attention, windows)."""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from . import _library
from ._checks import check_floating, fused_kernel_takes, shape_of

# Positions per chunk of the fused causal kernels (the C++ ops' kCausalChunk, measured in
# docs/BENCHMARKS.md, "Chunk of the causal kernels").
CAUSAL_CHUNK = 32


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


def check_key_padding(where: str, key_padding: Tensor, keys: Tensor) -> None:
    """key_padding: (B, Nk) bool, True for real tokens, for keys (B, Nk, ...)."""
    if key_padding.dtype != torch.bool or shape_of(key_padding) != shape_of(keys)[:2]:
        raise ValueError(f"{where}: key_padding must be (B, Nk) = {shape_of(keys)[:2]} bool, "
                         f"got shape {shape_of(key_padding)} {key_padding.dtype}")


def mask_keys(where: str, phi_k: Tensor, key_padding: Optional[Tensor]) -> Tensor:
    """Zeroes the features of padded keys. key_padding: (B, Nk) bool, True for real tokens."""
    if key_padding is None:
        return phi_k
    check_key_padding(where, key_padding, phi_k)
    return phi_k * key_padding.to(phi_k.dtype)[:, :, None, None]


def _divide_by_normaliser(numerator: Tensor, phi_q: Tensor, keys: Tensor, eps: float, causal: bool) -> Tensor:
    """numerator (B, Nq, H, Dv) / max(phi_q_m . sum_n phi_k_n, eps), keys already masked; n <= m when causal."""
    if causal:
        denominator = (phi_q * keys.cumsum(1)).sum(-1)                    # (B, N, H)
    else:
        denominator = torch.einsum("bnhm,bhm->bnh", phi_q, keys.sum(1))   # (B, Nq, H)
    return numerator / denominator.clamp_min(eps).unsqueeze(-1)


def _normalised_sums(psi_q: Tensor, psi_k: Tensor, phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float) -> Tensor:
    """Non-causal, keys already masked (psi = phi without positioned features) -> (B, Nq, H, Dv)."""
    kv = torch.einsum("bnhp,bnhd->bhpd", psi_k, v)                        # (B, H, P, Dv)
    return _divide_by_normaliser(torch.einsum("bnhp,bhpd->bnhd", psi_q, kv), phi_q, phi_k, eps, False)


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
                            eps: float = 1e-6, chunk: int = CAUSAL_CHUNK) -> Tensor:
    """Position m attends to n <= m. phi_q, phi_k: (B, N, H, M), v: (B, N, H, Dv) -> (B, N, H, Dv).
    On CPU (float32, float64) torch.ops.spe.causal_linear_attention: chunks of `chunk` positions,
    memory flat in N, its own backward."""
    check_qkv("causal_linear_attention", phi_q, phi_k, v)
    _check_eps("causal_linear_attention", eps)
    _check_causal("causal_linear_attention", phi_q, phi_k)
    if chunk <= 0:
        raise ValueError(f"causal_linear_attention: chunk must be positive, got {chunk}")
    keys = mask_keys("causal_linear_attention", phi_k, key_padding)
    if not fused_kernel_takes(phi_q):
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


def _check_separable(where: str, phi_q: Tensor, phi_k: Tensor, coefficients_q: Tensor,
                     coefficients_k: Tensor) -> None:
    for name, c, phi in (("coefficients_q", coefficients_q, phi_q), ("coefficients_k", coefficients_k, phi_k)):
        if c.dim() != 4 or shape_of(c)[:3] != [phi.size(1), phi.size(2), phi.size(3)] or \
                c.size(3) != coefficients_q.size(3):
            raise ValueError(f"{where}: {name} must be (N, H, M, J) with (N, H, M) = "
                             f"{[phi.size(1), phi.size(2), phi.size(3)]} and J of coefficients_q, got shape {shape_of(c)}")
        if c.dtype != phi_q.dtype:
            raise TypeError(f"{where}: {name} must have phi_q's dtype {phi_q.dtype}, got {c.dtype}")


def _separable_numerator(phi_q: Tensor, keys: Tensor, v: Tensor, coefficients_q: Tensor, coefficients_k: Tensor,
                         causal: bool) -> Tensor:
    """sum over (m <= n when causal) of (psi_q_n . psi_k_m) v_m: the fused op on CPU, psi materialised elsewhere."""
    if fused_kernel_takes(phi_q):
        if not torch.jit.is_scripting():
            _library.load_library()
        return torch.ops.spe.separable_linear_numerator(phi_q, keys, v, coefficients_q, coefficients_k, causal)
    psi_q = (phi_q.unsqueeze(-1) * coefficients_q).flatten(3)
    psi_k = (keys.unsqueeze(-1) * coefficients_k).flatten(3)
    if causal:
        return causal_product(psi_q, psi_k, v)
    return torch.einsum("bnhp,bhpd->bnhd", psi_q, torch.einsum("bnhp,bnhd->bhpd", psi_k, v))


def linear_attention_separable(phi_q: Tensor, phi_k: Tensor, v: Tensor, coefficients_q: Tensor,
                               coefficients_k: Tensor, key_padding: Optional[Tensor] = None,
                               eps: float = 1e-6) -> Tensor:
    """Non-causal with separable numerator features psi[b, n, h, d J + j] = phi[b, n, h, d]
    coefficients[n, h, d, j] (sineSPE's exact code on the features: SineSPE.exact_coefficients
    gated by SPEFilter.gate_coefficients). coefficients_q: (Nq, H, M, J), coefficients_k:
    (Nk, H, M, J) -> (B, Nq, H, Dv). On CPU (float32, float64) torch.ops.spe.separable_linear_numerator,
    which never holds psi (B, N, H, M J); elsewhere psi materialised."""
    where = "linear_attention_separable"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_separable(where, phi_q, phi_k, coefficients_q, coefficients_k)
    keys = mask_keys(where, phi_k, key_padding)
    return _divide_by_normaliser(_separable_numerator(phi_q, keys, v, coefficients_q, coefficients_k, False), phi_q,
                                 keys, eps, False)


def causal_linear_attention_separable(phi_q: Tensor, phi_k: Tensor, v: Tensor, coefficients_q: Tensor,
                                      coefficients_k: Tensor, key_padding: Optional[Tensor] = None,
                                      eps: float = 1e-6) -> Tensor:
    """Causal (Nq = Nk) linear_attention_separable: on CPU the fused op's causal form (chunks of
    positions, memory flat in N)."""
    where = "causal_linear_attention_separable"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_causal(where, phi_q, phi_k)
    _check_separable(where, phi_q, phi_k, coefficients_q, coefficients_k)
    keys = mask_keys(where, phi_k, key_padding)
    return _divide_by_normaliser(_separable_numerator(phi_q, keys, v, coefficients_q, coefficients_k, True), phi_q,
                                 keys, eps, True)


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
    return _divide_by_normaliser(numerator, phi_q, mask_keys(where, phi_k, key_padding), eps, True)


def _check_log_decay(where: str, log_decay: Tensor, x: Tensor) -> None:
    """log_decay: (H,) of x's (B, N, H, F) H, in x's dtype."""
    if log_decay.dim() != 1 or log_decay.size(0) != x.size(2):
        raise ValueError(f"{where}: log_decay must be (H,) with H = {x.size(2)}, got shape {shape_of(log_decay)}")
    if log_decay.dtype != x.dtype:
        raise TypeError(f"{where}: log_decay must have the inputs' dtype {x.dtype}, got {log_decay.dtype}")


def _powers(log_decay: Tensor, exponents: Tensor) -> Tensor:
    """g^e in every head for exponents e >= 0 (any shape): (H, *exponents.shape)."""
    return torch.exp(log_decay.view([-1] + [1] * exponents.dim()) * exponents.unsqueeze(0))


def _decayed_product(a: Tensor, b: Tensor, v: Tensor, log_decay: Tensor, chunk: int) -> Tensor:
    """decayed_causal_product on checked inputs: a decayed C x C product inside each chunk, and
    the state before each chunk by the scan state_c = g^C state_(c-1) + (chunk c-1's sum at its end)."""
    n = a.size(1)
    chunks = (n + chunk - 1) // chunk
    ab, bb, vb = _blocks(a, chunks, chunk), _blocks(b, chunks, chunk), _blocks(v, chunks, chunk)
    i = torch.arange(chunk, dtype=a.dtype, device=a.device)                       # position inside a chunk
    lag = i.unsqueeze(1) - i.unsqueeze(0)                                          # (C, C): i - j
    inside_weights = _powers(log_decay, lag.clamp_min(0)).tril()                  # (H, C, C): g^(i - j), j <= i
    inside = torch.matmul(torch.matmul(ab, bb.transpose(-1, -2)) * inside_weights.unsqueeze(1), vb)
    to_end = _powers(log_decay, (chunk - 1) - i).unsqueeze(1).unsqueeze(-1)       # (H, 1, C, 1)
    sums = torch.matmul((bb * to_end).transpose(-1, -2), vb)                      # (B, H, chunks, P, Dv)
    per_chunk = torch.exp(log_decay * float(chunk)).view(1, -1, 1, 1)
    states: List[Tensor] = [torch.zeros_like(sums[:, :, 0])]
    for c in range(1, chunks):
        states.append(states[-1] * per_chunk + sums[:, :, c - 1])
    from_start = _powers(log_decay, i + 1).unsqueeze(1).unsqueeze(-1)            # a query at i reads g^(i + 1) later
    out = inside + torch.matmul(ab * from_start, torch.stack(states, 2))           # (B, H, chunks, C, Dv)
    return out.permute(0, 2, 3, 1, 4).flatten(1, 2)[:, :n]


def decayed_causal_product(a: Tensor, b: Tensor, v: Tensor, log_decay: Tensor, chunk: int = 64) -> Tensor:
    """sum_{n <= m} g_h^(m - n) (a_m . b_n) v_n, a, b: (B, N, H, P), v: (B, N, H, Dv), log_decay (H,)
    -> (B, N, H, Dv), in chunks of C positions with a state carried across chunks. Every power of g
    it forms has a non-negative exponent, so no factor overflows at any N."""
    where = "decayed_causal_product"
    check_qkv(where, a, b, v, ("a", "b", "v"))
    if a.size(1) != b.size(1):
        raise ValueError(f"{where}: a ({a.size(1)} positions) and b ({b.size(1)}) must have the same length")
    if chunk <= 0:
        raise ValueError(f"{where}: chunk must be positive, got {chunk}")
    _check_log_decay(where, log_decay, a)
    return _decayed_product(a, b, v, log_decay, chunk)


def _with_ones(v: Tensor) -> Tensor:
    """(B, N, H, Dv) -> (B, N, H, Dv + 1): the normaliser rides along as a last value feature of ones."""
    return torch.cat([v, torch.ones_like(v[..., :1])], 3)


def _normalise(sums: Tensor, eps: float) -> Tensor:
    """(B, N, H, Dv + 1) sums of values and ones -> (B, N, H, Dv)."""
    return sums[..., :-1] / sums[..., -1:].clamp_min(eps)


def decayed_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, log_decay: Tensor, causal: bool,
                             key_padding: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """out_m = sum_n g_h^|m - n| (phi_q_m . phi_k_n) v_n / max(sum_n g_h^|m - n| phi_q_m . phi_k_n, eps)
    over n <= m when causal, every n otherwise. phi_q, phi_k: (B, N, H, M), v: (B, N, H, Dv),
    log_decay: (H,), log g_h <= 0 (Decay.log_decay()) -> (B, N, H, Dv). Linear in N: causal on CPU
    (float32, float64) the fused chunked kernel with its own backward (log_decay's gradient
    included): torch.ops.spe.decayed_causal_linear_attention, or when not causal
    torch.ops.spe.decayed_causal_linear_sums run both ways less the pair (m, m); elsewhere the
    decayed causal product likewise."""
    where = "decayed_linear_attention"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_causal(where, phi_q, phi_k)
    _check_log_decay(where, log_decay, phi_q)
    keys = mask_keys(where, phi_k, key_padding)
    fused = fused_kernel_takes(phi_q)
    if fused and not torch.jit.is_scripting():
        _library.load_library()
    if causal and fused:
        return torch.ops.spe.decayed_causal_linear_attention(phi_q, keys, v, log_decay, eps)  # its default chunk
    num, den = _decayed_sums(phi_q, keys, v, log_decay, fused)
    if not causal:  # the keys after each query: the same sums backwards, less the pair (m, m) both hold
        num_back, den_back = _decayed_sums(phi_q.flip(1), keys.flip(1), v.flip(1), log_decay, fused)
        itself = (phi_q * keys).sum(-1)  # (B, N, H)
        num = num + num_back.flip(1) - itself.unsqueeze(-1) * v
        den = den + den_back.flip(1) - itself
    return num / den.clamp_min(eps).unsqueeze(-1)


def _decayed_sums(a: Tensor, b: Tensor, v: Tensor, log_decay: Tensor, fused: bool) -> Tuple[Tensor, Tensor]:
    """The decayed sums over n <= m: numerators (B, N, H, Dv) and normalisers (B, N, H), from the
    fused op or the decayed causal product."""
    if fused:
        return torch.ops.spe.decayed_causal_linear_sums(a, b, v, log_decay)
    sums = _decayed_product(a, b, _with_ones(v), log_decay, 64)
    return sums[..., :-1], sums[..., -1]


def _check_lag_bias(where: str, lag_bias: Tensor, x: Tensor) -> None:
    """lag_bias: (H, 2N - 1) for x (B, N, H, F), in x's dtype."""
    n, h = x.size(1), x.size(2)
    if lag_bias.dim() != 2 or lag_bias.size(0) != h or lag_bias.size(1) != 2 * n - 1:
        raise ValueError(f"{where}: lag_bias must be (H, 2N - 1) = ({h}, {2 * n - 1}), got shape {shape_of(lag_bias)}")
    if lag_bias.dtype != x.dtype:
        raise TypeError(f"{where}: lag_bias must have the inputs' dtype {x.dtype}, got {lag_bias.dtype}")


def _circulant_column(lag_bias: Tensor, causal: bool) -> Tensor:
    """The first column of the 2N circulant that holds the Toeplitz matrix exp(b(m - n)):
    lags 0 .. N - 1, a zero, lags -(N - 1) .. -1 (zeros when causal): (H, 2N)."""
    n = (lag_bias.size(1) + 1) // 2
    weights = torch.exp(lag_bias)
    before, after = weights[:, : n - 1], weights[:, n - 1:]
    if causal:
        before = torch.zeros_like(before)
    return torch.cat([after, torch.zeros_like(after[:, :1]), before], 1)


def _seen_mask(key_padding: Tensor, causal: bool) -> Tensor:
    """(B, N, 1, 1): 1 for a query that sees at least one real key, else 0."""
    real = key_padding.to(torch.long)
    seen = real.cumsum(1) if causal else real.sum(1, keepdim=True).expand_as(real)
    return (seen > 0)[:, :, None, None]


def toeplitz_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, lag_bias: Tensor, causal: bool,
                              key_padding: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """out_m = sum_n e^(b_h(m - n)) (phi_q_m . phi_k_n) v_n / max(sum_n e^(b_h(m - n)) phi_q_m . phi_k_n, eps)
    over n <= m when causal, every n otherwise. phi_q, phi_k: (B, N, H, M), v: (B, N, H, Dv),
    lag_bias: (H, 2N - 1), b_h for lags -(N - 1) .. N - 1 (ToeplitzBias.lag_bias(N)) -> (B, N, H, Dv).
    The Toeplitz sums are circulant products of length 2N by FFT, O(N log N) per (feature, value
    feature) pair, holding (B, H, M, Dv + 1, 2N); a query that sees no key gets zeros."""
    where = "toeplitz_linear_attention"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_causal(where, phi_q, phi_k)
    _check_lag_bias(where, lag_bias, phi_q)
    n = phi_q.size(1)
    pairs = torch.einsum("bnhm,bnhd->bhmdn", mask_keys(where, phi_k, key_padding), _with_ones(v))
    spectrum = torch.fft.rfft(_circulant_column(lag_bias, causal), 2 * n)[None, :, None, None]  # (1, H, 1, 1, N + 1)
    sums = torch.fft.irfft(torch.fft.rfft(pairs, 2 * n) * spectrum, 2 * n)[..., :n]        # (B, H, M, Dv + 1, N)
    out = _normalise(torch.einsum("bnhm,bhmdn->bnhd", phi_q, sums), eps)
    if key_padding is None:
        return out
    return out * _seen_mask(key_padding, causal).to(out.dtype)


def _window_weights(bias: Tensor, block: int, window: int, causal: bool) -> Tensor:
    """e^(b_h(clamp(m - n, -clip, clip))) of a block's queries (rows s) against its window's keys
    (columns t, starting one block earlier): lag s - t + block; zero for n > m when causal: (H, block, window)."""
    clip = (bias.size(1) - 1) // 2
    lag = torch.arange(block, device=bias.device)[:, None] - torch.arange(window, device=bias.device)[None, :] + block
    w = bias.exp()[:, (lag.clamp(-clip, clip) + clip).flatten()].view(-1, block, window)
    return w * (lag >= 0).to(w.dtype) if causal else w


def _key_windows(x: Tensor, block: int, blocks: int) -> Tensor:
    """(B, N, H, F) -> each block's window of `blocks` blocks from one block before it: (B, H, chunks, blocks block, F)."""
    chunks = (x.size(1) + block - 1) // block
    after = chunks * block - x.size(1) + (blocks - 2) * block
    padded = torch.nn.functional.pad(x, [0, 0, 0, 0, block, after])
    return padded.permute(0, 2, 3, 1).unfold(3, blocks * block, block).permute(0, 1, 3, 4, 2)


def _windowed_toeplitz_sums(phi_q: Tensor, keys: Tensor, values: Tensor, bias: Tensor, causal: bool,
                            block: int) -> Tensor:
    """The clipped Toeplitz sums (B, N, H, Dv + 1): the keys of a query's block and its neighbours
    with their own weights, every farther key (beyond the clip) from per-block prefix sums of k v^T."""
    n, h, blocks = phi_q.size(1), phi_q.size(2), 2 if causal else 3
    chunks = (n + block - 1) // block
    qb = _blocks(phi_q, chunks, block)                                                  # (B, H, C, b, M)
    kw, vw = _key_windows(keys, block, blocks), _key_windows(values, block, blocks)
    w = _window_weights(bias, block, blocks * block, causal).unsqueeze(1)              # (H, 1, b, window)
    sums = ((qb @ kw.transpose(-1, -2)) * w) @ vw                                      # (B, H, C, b, Dv + 1)
    through = (_blocks(keys, chunks, block).transpose(-1, -2) @ _blocks(values, chunks, block)).cumsum(2)
    far_before = torch.nn.functional.pad(through, [0, 0, 0, 0, 2, 0])[:, :, :chunks]
    sums = sums + bias[:, -1].exp().view(1, h, 1, 1, 1) * (qb @ far_before)
    if not causal:
        total = through[:, :, chunks - 1:]
        through_next = torch.cat([through[:, :, 1:], total], 2)
        sums = sums + bias[:, 0].exp().view(1, h, 1, 1, 1) * (qb @ (total - through_next))
    return sums.permute(0, 2, 3, 1, 4).flatten(1, 2)[:, :n]


def clipped_toeplitz_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, bias: Tensor, causal: bool,
                                      key_padding: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """toeplitz_linear_attention with the bias clipped as ToeplitzBias keeps it: bias (H, 2 clip + 1)
    for lags -clip .. clip, farther lags sharing the bias of their end. For clip < N by windows of
    max(clip, 16) positions plus prefix sums for the far keys, O(N clip (M + Dv)); by the FFT
    otherwise (C++ clipped_toeplitz_linear_attention, same choice)."""
    where = "clipped_toeplitz_linear_attention"
    check_qkv(where, phi_q, phi_k, v)
    _check_eps(where, eps)
    _check_causal(where, phi_q, phi_k)
    n, h = phi_q.size(1), phi_q.size(2)
    if bias.dim() != 2 or bias.size(0) != h or bias.size(1) % 2 != 1 or bias.size(1) < 3:
        raise ValueError(f"{where}: bias must be (H, 2 clip + 1) with H = {h} and clip >= 1, got shape {shape_of(bias)}")
    if bias.dtype != phi_q.dtype:
        raise TypeError(f"{where}: bias must have the inputs' dtype {phi_q.dtype}, got {bias.dtype}")
    clip = (bias.size(1) - 1) // 2
    features, value_dim = phi_q.size(3), v.size(3) + 1
    fft_work = 4.0 * features * value_dim * math.log2(2.0 * n)
    if clip >= n or 3.0 * clip * (features + value_dim) >= fft_work:
        lags = torch.arange(-(n - 1), n, device=bias.device).clamp(-clip, clip) + clip
        return toeplitz_linear_attention(phi_q, phi_k, v, bias[:, lags], causal, key_padding, eps)
    keys = mask_keys(where, phi_k, key_padding)
    return _normalise(_windowed_toeplitz_sums(phi_q, keys, _with_ones(v), bias, causal, max(clip, 16)), eps)


class LinearAttention(nn.Module):
    """linear_attention or causal_linear_attention as a module (no parameters).
    forward(phi_q (B, Nq, H, M), phi_k (B, Nk, H, M), v (B, Nk, H, Dv), key_padding (B, Nk) bool
    or None) -> (B, Nq, H, Dv)."""

    def __init__(self, causal: bool = False, eps: float = 1e-6, chunk: int = CAUSAL_CHUNK):
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
