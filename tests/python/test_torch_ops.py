"""torch.ops.spe.* from Python: results against pure-PyTorch formulas written here, and
torch.autograd.gradcheck of the C++ backward. Run by ctest with /usr/bin/python3 (Debian's
python3-torch) and SPE_TORCH_OPS pointing at libspe_torch_ops.so."""
import math
import os
import unittest

import torch

torch.ops.load_library(os.environ["SPE_TORCH_OPS"])


def causal_reference(q, k, v, eps):
    """out_m = sum_{n<=m} (q_m . k_n) v_n / max(sum_{n<=m} q_m . k_n, eps)."""
    s = torch.einsum("bmhf,bnhf->bhmn", q, k).tril()
    num = torch.einsum("bhmn,bnhd->bmhd", s, v)
    return num / s.sum(-1).transpose(1, 2).clamp_min(eps).unsqueeze(-1)


def decayed_causal_reference(q, k, v, log_decay, eps):
    """out_m = sum_{n<=m} g^(m - n) (q_m . k_n) v_n / max(sum_{n<=m} g^(m - n) q_m . k_n, eps)."""
    n = torch.arange(q.shape[1], dtype=q.dtype)
    lags = (n[:, None] - n[None, :]).clamp_min(0)
    weights = torch.exp(log_decay[:, None, None] * lags) * (n[:, None] >= n[None, :])   # (H, N, N)
    s = torch.einsum("bmhf,bnhf->bhmn", q, k) * weights
    num = torch.einsum("bhmn,bnhd->bmhd", s, v)
    return num / s.sum(-1).transpose(1, 2).clamp_min(eps).unsqueeze(-1)


def sine_reference(x, f, theta, w, a, c, first):
    """code[n, h, d, :] = a[h, d] sum_j Omega_j(n) w[h, d, j, :] + c[h, d, :]; out = sum_d x code."""
    n = torch.arange(first, first + x.shape[1], dtype=torch.float64)
    phase = 2 * math.pi * f[None] * n[:, None, None, None] + theta[None]  # (N, H, D, K)
    omega = torch.stack([phase.cos(), phase.sin()], -1).flatten(-2).to(x.dtype)  # (N, H, D, 2K)
    code = torch.einsum("nhdj,hdjr->nhdr", omega, w)
    if a is not None:
        code = code * a[..., None]
    if c is not None:
        code = code + c
    return torch.einsum("bnhd,nhdr->bnhr", x, code)


class CausalLinearAttention(unittest.TestCase):
    def inputs(self, dtype, requires_grad=False):
        g = torch.Generator().manual_seed(0)
        shape = (2, 13, 3, 4)
        q = torch.rand(shape, generator=g, dtype=dtype)
        k = torch.rand(shape, generator=g, dtype=dtype)
        v = torch.randn(2, 13, 3, 5, generator=g, dtype=dtype)
        return [t.requires_grad_(requires_grad) for t in (q, k, v)]

    def test_matches_the_formula(self):
        q, k, v = self.inputs(torch.float64)
        for chunk in (1, 4, 64):
            out = torch.ops.spe.causal_linear_attention(q, k, v, 1e-6, chunk)
            self.assertLess((out - causal_reference(q, k, v, 1e-6)).abs().max().item(), 1e-10)
        q, k, v = self.inputs(torch.float32)
        out = torch.ops.spe.causal_linear_attention(q, k, v)
        want = causal_reference(q.double(), k.double(), v.double(), 1e-6)
        self.assertLess(((out.double() - want).abs().max() / want.abs().max()).item(), 1e-4)

    def test_gradcheck(self):
        q, k, v = self.inputs(torch.float64, requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(
            lambda a, b, c: torch.ops.spe.causal_linear_attention(a, b, c, 1e-6, 4), (q, k, v)))

    def test_bad_input_is_named(self):
        q, k, v = self.inputs(torch.float32)
        with self.assertRaisesRegex(RuntimeError, "inputs must share a dtype"):
            torch.ops.spe.causal_linear_attention(q, k, v.double())


class DecayedCausalLinearAttention(unittest.TestCase):
    def inputs(self, dtype, requires_grad=False):
        q, k, v = CausalLinearAttention.inputs(self, dtype)
        log_decay = torch.log(torch.tensor([0.5, 0.9, 1.0], dtype=dtype))
        return [t.requires_grad_(requires_grad) for t in (q, k, v, log_decay)]

    def test_matches_the_formula(self):
        q, k, v, log_decay = self.inputs(torch.float64)
        for chunk in (1, 4, 64):
            out = torch.ops.spe.decayed_causal_linear_attention(q, k, v, log_decay, 1e-6, chunk)
            want = decayed_causal_reference(q, k, v, log_decay, 1e-6)
            self.assertLess((out - want).abs().max().item(), 1e-10)

    def test_gradcheck_including_the_decay(self):
        q, k, v, log_decay = self.inputs(torch.float64, requires_grad=True)
        log_decay = (log_decay.detach() - 0.05).requires_grad_()  # below 0 by more than gradcheck's step
        self.assertTrue(torch.autograd.gradcheck(
            lambda a, b, c, d: torch.ops.spe.decayed_causal_linear_attention(a, b, c, d, 1e-6, 4),
            (q, k, v, log_decay)))

    def test_bad_input_is_named(self):
        q, k, v, log_decay = self.inputs(torch.float32)
        with self.assertRaisesRegex(RuntimeError, "log_decay must be <= 0"):
            torch.ops.spe.decayed_causal_linear_attention(q, k, v, -log_decay - 0.1)


class DecayedCausalLinearSums(unittest.TestCase):
    """The same sums before the division: (num, den)."""
    def test_matches_the_formula(self):
        q, k, v, log_decay = DecayedCausalLinearAttention.inputs(self, torch.float64)
        q = q - 0.4  # features of both signs: nothing here is clamped
        n = torch.arange(q.shape[1], dtype=q.dtype)
        lags = (n[:, None] - n[None, :]).clamp_min(0)
        weights = torch.exp(log_decay[:, None, None] * lags) * (n[:, None] >= n[None, :])
        s = torch.einsum("bmhf,bnhf->bhmn", q, k) * weights
        for chunk in (1, 4, 64):
            num, den = torch.ops.spe.decayed_causal_linear_sums(q, k, v, log_decay, chunk)
            self.assertLess((num - torch.einsum("bhmn,bnhd->bmhd", s, v)).abs().max().item(), 1e-10)
            self.assertLess((den - s.sum(-1).transpose(1, 2)).abs().max().item(), 1e-10)

    def test_gradcheck_through_both_outputs(self):
        q, k, v, log_decay = DecayedCausalLinearAttention.inputs(self, torch.float64, requires_grad=True)
        log_decay = (log_decay.detach() - 0.05).requires_grad_()
        self.assertTrue(torch.autograd.gradcheck(
            lambda a, b, c, d: torch.ops.spe.decayed_causal_linear_sums(a, b, c, d, 4), (q, k, v, log_decay)))


class SineSPEFilter(unittest.TestCase):
    def inputs(self, requires_grad=False):
        g = torch.Generator().manual_seed(1)
        B, N, H, D, K, R = 2, 9, 2, 3, 2, 4
        tensors = [torch.randn(B, N, H, D, generator=g, dtype=torch.float64),
                   torch.rand(H, D, K, generator=g, dtype=torch.float64) * 0.5,
                   torch.randn(H, D, K, generator=g, dtype=torch.float64),
                   torch.randn(H, D, 2 * K, R, generator=g, dtype=torch.float64),
                   torch.rand(H, D, generator=g, dtype=torch.float64),
                   torch.randn(H, D, R, generator=g, dtype=torch.float64)]
        return [t.requires_grad_(requires_grad) for t in tensors]

    def test_matches_the_formula(self):
        x, f, theta, w, a, c = self.inputs()
        out = torch.ops.spe.sine_spe_filter(x, f, theta, w, a, c, 5)
        self.assertLess((out - sine_reference(x, f, theta, w, a, c, 5)).abs().max().item(), 1e-10)
        ungated = torch.ops.spe.sine_spe_filter(x, f, theta, w)
        self.assertLess((ungated - sine_reference(x, f, theta, w, None, None, 0)).abs().max().item(), 1e-10)

    def test_gradcheck(self):
        inputs = self.inputs(requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(
            lambda *t: torch.ops.spe.sine_spe_filter(*t, 3), tuple(inputs)))

    def test_bad_input_is_named(self):
        x, f, theta, w, a, c = self.inputs()
        with self.assertRaisesRegex(RuntimeError, "frequencies and phases must be float64"):
            torch.ops.spe.sine_spe_filter(x, f.float(), theta, w)


class DepthwiseCorrelation(unittest.TestCase):
    def inputs(self, requires_grad=False):
        g = torch.Generator().manual_seed(2)
        x = torch.randn(20, 3, 5, generator=g, dtype=torch.float64)     # (X, C, R)
        w = torch.randn(3, 7, generator=g, dtype=torch.float64)         # (C, S)
        return [t.requires_grad_(requires_grad) for t in (x, w)]

    def test_matches_the_formula(self):
        x, w = self.inputs()
        out = torch.ops.spe.depthwise_correlation(x, w)
        want = torch.zeros(14, 3, 5, dtype=torch.float64)
        for t in range(14):
            for j in range(7):
                want[t] += w[:, j, None] * x[t + j]
        self.assertLess((out - want).abs().max().item(), 1e-12)

    def test_gradcheck(self):
        self.assertTrue(torch.autograd.gradcheck(torch.ops.spe.depthwise_correlation, tuple(self.inputs(True))))

    def test_bad_input_is_named(self):
        x, w = self.inputs()
        with self.assertRaisesRegex(RuntimeError, "one filter per channel"):
            torch.ops.spe.depthwise_correlation(x, w[:2])


class ApplySPECode(unittest.TestCase):
    def inputs(self, requires_grad=False):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64)     # (B, N, H, D)
        code = torch.randn(6, 2, 5, 7, generator=g, dtype=torch.float64)  # (N' >= N, H, D, R)
        return [t.requires_grad_(requires_grad) for t in (x, code)]

    def test_matches_the_formula(self):
        x, code = self.inputs()
        out = torch.ops.spe.apply_spe_code(x, code)
        want = (x[..., None] * code[None, :4]).sum(3)
        self.assertLess((out - want).abs().max().item(), 1e-12)

    def test_gradcheck(self):
        self.assertTrue(torch.autograd.gradcheck(torch.ops.spe.apply_spe_code, tuple(self.inputs(True))))

    def test_bad_input_is_named(self):
        x, code = self.inputs()
        with self.assertRaisesRegex(RuntimeError, "positions exceed the code"):
            torch.ops.spe.apply_spe_code(x, code[:3])


class RelativeBuckets(unittest.TestCase):
    # Shaw's clipped distances: query i of Nq = 5 at i + Nk - Nq, keys Nk = 8, k = 2
    def bucket(self, i, j):
        return min(max(j - (i + 3), -2), 2) + 2

    def test_expand_matches_the_formula(self):
        g = torch.Generator().manual_seed(4)
        per_bucket = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)
        out = torch.ops.spe.expand_relative_buckets(per_bucket, 8)
        for i in range(5):
            for j in range(8):
                self.assertEqual(out[:, i, j].tolist(), per_bucket[:, i, self.bucket(i, j)].tolist())

    def test_sum_matches_the_formula(self):
        g = torch.Generator().manual_seed(5)
        per_key = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
        want = torch.zeros(2, 5, 5, dtype=torch.float64)
        for i in range(5):
            for j in range(8):
                want[:, i, self.bucket(i, j)] += per_key[:, i, j]
        out = torch.ops.spe.sum_relative_buckets(per_key, 2)
        self.assertLess((out - want).abs().max().item(), 1e-12)

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(6)
        per_bucket = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
        per_key = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
        self.assertTrue(torch.autograd.gradcheck(lambda p: torch.ops.spe.expand_relative_buckets(p, 8), (per_bucket,)))
        self.assertTrue(torch.autograd.gradcheck(lambda x: torch.ops.spe.sum_relative_buckets(x, 2), (per_key,)))

    def test_bad_input_is_named(self):
        with self.assertRaisesRegex(RuntimeError, "must be 2k \\+ 1 \\(odd\\)"):
            torch.ops.spe.expand_relative_buckets(torch.randn(2, 5, 4, dtype=torch.float64), 8)


if __name__ == "__main__":
    unittest.main()
