"""The spe_torch package (python/): its modules against the formulas written out here in float64
with plain loops, gradcheck through the fused ops, state_dict names equal to the C++ ones,
argument errors, TorchScript, a statistical check of the sampled code, the library search and
the checkpoint reader. Run by tests/python/run_package_tests.sh with SPE_TORCH_OPS set (and
SPE_CLI, the `spe` executable, for the checks against C++ output; skipped without it)."""
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

import spe_torch
from spe_torch import _library

F64 = torch.float64
SPE_CLI = os.environ.get("SPE_CLI")

# The C++ state_dict names: register_parameter / register_buffer in src/encoding/sine_spe.cpp,
# conv_spe.cpp, spe_filter.cpp, rotary.cpp, decay.cpp, toeplitz.cpp and src/attention/feature_maps.cpp.
CPP_NAMES = {
    "SineSPE": ["freqs", "offsets", "gains"],
    "ConvSPE": ["weight_q", "weight_k"],
    "SPEFilter gated": ["gate"],
    "SPEFilter ungated": [],
    "FeatureMap favor": ["projection"],
    "FeatureMap elu": [],
    "RotaryEncoding": [],
    "Decay": ["logits"],
    "ToeplitzBias": ["bias"],
}


def max_error(a, b):
    return (a - b).abs().max().item()


# ---- references, written from the formulas (docs/PYTHON.md, SPE_NOTES) ----

def sine_code_reference(freqs, offsets, gains, z, positions, query_side):
    """Qbar or Kbar (N, H, D, R) from raw parameters and raw noise z ~ N(0, 1) (H, D, 2K, R):
    sum_k lambda_k [cos(phase_k) z_2k + sin(phase_k) z_2k+1] / sqrt(2K) / (R D)^(1/4)."""
    H, D, K = freqs.shape
    R = z.shape[-1]
    f, lam = torch.sigmoid(freqs.double()) / 2, F.softplus(gains.double())
    code = torch.zeros(len(positions), H, D, R, dtype=F64)
    for i, t in enumerate(positions):
        for k in range(K):
            phase = 2 * math.pi * f[..., k] * t + (offsets.double()[..., k] if query_side else 0.0)
            cos, sin = phase.cos()[..., None], phase.sin()[..., None]
            code[i] += lam[..., k, None] * (cos * z[:, :, 2 * k] + sin * z[:, :, 2 * k + 1])
    return code / math.sqrt(2 * K) / (R * D) ** 0.25


def gate_reference(code, gate, eps):
    """sqrt(1 - s) code + sqrt(s) eps / (D R)^(1/4), eps ~ N(0, 1) (H, D, R) raw."""
    s = torch.sigmoid(gate.double())[..., None]
    D, R = eps.shape[1], eps.shape[2]
    return (1 - s).sqrt() * code + s.sqrt() * eps / (D * R) ** 0.25


def apply_code(x, code):
    """out[b, n, h, r] = sum_d x[b, n, h, d] code[n, h, d, r], by loops over d."""
    out = torch.zeros(*x.shape[:3], code.shape[-1], dtype=x.dtype)
    for d in range(x.shape[3]):
        out += x[..., d, None] * code[None, : x.shape[1], :, d]
    return out


def sine_kernel_reference(freqs, offsets, gains, lag):
    """P_d(lag) = (1 / 2K) sum_k lambda_k^2 cos(2 pi f_k lag + theta_k): (H, D)."""
    f, lam = torch.sigmoid(freqs.double()) / 2, F.softplus(gains.double())
    K = freqs.shape[-1]
    theta = offsets.double()
    return sum(lam[..., k] ** 2 * torch.cos(2 * math.pi * f[..., k] * lag + theta[..., k]) for k in range(K)) / (2 * K)


def linear_reference(q, k, v, eps, causal, padding=None, psi_q=None, psi_k=None):
    """out_m = sum_n (psi_q_m . psi_k_n) v_n / max(sum_n phi_q_m . phi_k_n, eps), over unmasked n
    (n <= m when causal); psi = phi unless given."""
    psi_q, psi_k = (q, k) if psi_q is None else (psi_q, psi_k)
    B, N, H, _ = q.shape
    out = torch.zeros(B, N, H, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for m in range(N):
            for h in range(H):
                num, den = 0.0, 0.0
                for n in range(m + 1 if causal else k.shape[1]):
                    if padding is None or padding[b, n]:
                        num = num + (psi_q[b, m, h] @ psi_k[b, n, h]) * v[b, n, h]
                        den = den + q[b, m, h] @ k[b, n, h]
                out[b, m, h] = num / max(float(den), eps)
    return out


def weighted_linear_reference(q, k, v, kernel, causal, padding=None, eps=1e-6):
    """out_m = sum_n w_h(m - n) (q_m . k_n) v_n / max(sum_n w_h(m - n) q_m . k_n, eps) over unmasked
    n (n <= m when causal); kernel: (H, 2N - 1), w_h(lag) at column lag + N - 1. No key: zeros."""
    B, N, H, _ = q.shape
    out = torch.zeros(B, N, H, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for m in range(N):
            for h in range(H):
                num, den = 0.0, 0.0
                for n in range(m + 1 if causal else N):
                    if padding is None or padding[b, n]:
                        w = kernel[h, m - n + N - 1] * (q[b, m, h] @ k[b, n, h])
                        num, den = num + w * v[b, n, h], den + w
                out[b, m, h] = num / max(float(den), eps)
    return out


def decay_kernel_reference(log_decay, n):
    """g_h^|lag| for lags -(n - 1) .. n - 1, one power at a time: (H, 2n - 1)."""
    return torch.tensor([[math.exp(float(log_g) * abs(lag)) for lag in range(1 - n, n)] for log_g in log_decay],
                        dtype=F64)


def decayed_product_reference(a, b, v, log_decay):
    """sum_{n <= m} g_h^(m - n) (a_m . b_n) v_n, pair by pair."""
    out = torch.zeros(*a.shape[:3], v.shape[-1], dtype=a.dtype)
    for m in range(a.shape[1]):
        for n in range(m + 1):
            w = torch.exp(log_decay * (m - n)) * (a[:, m] * b[:, n]).sum(-1)   # (B, H)
            out[:, m] += w[..., None] * v[:, n]
    return out


def softmax_reference(q, k, v, causal, padding=None, bias=None):
    """softmax over the allowed keys n of q_m . k_n / sqrt(D) + bias[h, m, n] (causal: n <= m + Nk - Nq);
    a query without any allowed key gets zeros."""
    B, Nq, H, D = q.shape
    Nk = k.shape[1]
    out = torch.zeros(B, Nq, H, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for m in range(Nq):
            keys = [n for n in range(Nk) if (not causal or n <= m + Nk - Nq) and (padding is None or padding[b, n])]
            for h in range(H):
                if not keys:
                    continue
                scores = torch.stack([q[b, m, h] @ k[b, n, h] / math.sqrt(D) + (0 if bias is None else bias[h, m, n])
                                      for n in keys])
                e = (scores - scores.max()).exp()
                out[b, m, h] = sum(e[i] / e.sum() * v[b, n, h] for i, n in enumerate(keys))
    return out


def rotary_theta_reference(dim, base, scaling, s, length):
    """theta_i of each pair i after the scaling, from the formulas of include/spe/encoding/rotary.h."""
    thetas = []
    for i in range(dim // 2):
        b = base * s ** (dim / (dim - 2)) if scaling == "ntk" else base
        theta = b ** (-2 * i / dim)
        if scaling == "linear":
            theta = theta / s
        if scaling == "yarn":
            g = min(max((length * theta / (2 * math.pi) - 1) / (32 - 1), 0.0), 1.0)
            theta = (1 - g) * theta / s + g * theta
        thetas.append(theta)
    return thetas


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def relative_inputs(n=6):
    """phi_q, phi_k: (2, n, 2, 3) positive, v: (2, n, 2, 4), float64."""
    q, k = randn(2, n, 2, 3, seed=43).exp(), randn(2, n, 2, 3, seed=44).exp()
    return q, k, randn(2, n, 2, 4, seed=45)


class LibrarySearch(unittest.TestCase):
    def test_the_loaded_library_is_the_one_named(self):
        self.assertEqual(os.path.realpath(spe_torch.ops_library_path()), os.path.realpath(os.environ["SPE_TORCH_OPS"]))
        self.assertEqual(spe_torch.load_library(os.environ["SPE_TORCH_OPS"]), spe_torch.ops_library_path())

    def test_a_second_library_is_refused(self):
        with tempfile.NamedTemporaryFile(suffix=".so") as other:
            with self.assertRaisesRegex(RuntimeError, "already loaded from"):
                spe_torch.load_library(other.name)

    def test_order_path_then_environment_then_beside_spe(self):
        with tempfile.TemporaryDirectory() as root:
            exe, installed, built = self._fake_tree(root)
            with mock.patch.dict(os.environ, {"PATH": os.path.dirname(exe)}):
                os.environ.pop("SPE_TORCH_OPS", None)
                self.assertEqual(_library.find_library(), installed)     # <bindir>/../lib
                os.remove(installed)
                self.assertEqual(_library.find_library(), built)         # <bindir> (a build tree)
                os.environ["SPE_TORCH_OPS"] = installed
                with self.assertRaisesRegex(ImportError, "SPE_TORCH_OPS names .* not a file"):
                    _library.find_library()
                os.environ["SPE_TORCH_OPS"] = built
                self.assertEqual(_library.find_library(), built)
                self.assertEqual(_library.find_library(exe), exe)        # an explicit path first

    def _fake_tree(self, root):
        """root/bin/spe, root/lib/libspe_torch_ops.so and root/bin/libspe_torch_ops.so."""
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "lib"))
        exe = os.path.join(root, "bin", "spe")
        paths = [exe] + [os.path.join(root, d, _library.LIBRARY_NAME) for d in ("lib", "bin")]
        for path in paths:
            open(path, "w").close()
        os.chmod(exe, 0o755)
        return paths

    def test_not_found_names_every_place_tried(self):
        with tempfile.TemporaryDirectory() as empty, mock.patch.dict(os.environ, {"PATH": empty}):
            os.environ.pop("SPE_TORCH_OPS", None)
            with mock.patch.object(os.path, "isfile", return_value=False):
                with self.assertRaises(spe_torch.OpsLibraryNotFoundError) as caught:
                    _library.find_library()
        message = str(caught.exception)
        for place in ["/usr/local/lib/libspe_torch_ops.so", "/usr/lib/libspe_torch_ops.so", "SPE_TORCH_OPS",
                      "cmake --install build", "`spe` executable on PATH (none)"]:
            self.assertIn(place, message)

    def test_import_without_the_library_fails_at_first_use(self):
        script = ("import torch, spe_torch\n"
                  "try:\n    spe_torch.causal_linear_attention(*[torch.rand(1, 2, 1, 2)] * 3)\n"
                  "    print('loaded:', spe_torch.ops_library_path())\n"
                  "except spe_torch.OpsLibraryNotFoundError as e:\n    print('raised:', e)\n")
        env = {k: v for k, v in os.environ.items() if k != "SPE_TORCH_OPS"}
        env["PATH"] = "/nonexistent"
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        if out.stdout.startswith("loaded:"):
            self.skipTest("spe is installed system-wide here: " + out.stdout)
        self.assertIn("raised: spe_torch: libspe_torch_ops.so not found", out.stdout)


class SineSPETest(unittest.TestCase):
    H, D, K, R = 2, 3, 2, 5

    def module(self, gated=True):
        torch.manual_seed(0)
        spe = spe_torch.SineSPE(self.H, self.D, sines=self.K, realizations=self.R).double()
        return spe, spe_torch.SPEFilter(self.H, self.D, gated=gated).double()

    def test_state_dict_names_are_the_cpp_ones(self):
        spe, gated = self.module()
        self.assertEqual(list(spe.state_dict()), CPP_NAMES["SineSPE"])
        self.assertEqual(list(gated.state_dict()), CPP_NAMES["SPEFilter gated"])
        self.assertEqual(list(spe_torch.SPEFilter(2, 3, gated=False).state_dict()), CPP_NAMES["SPEFilter ungated"])
        self.assertEqual(spe.freqs.shape, (self.H, self.D, self.K))

    def test_reference_initialisation(self):
        torch.manual_seed(5)
        spe = spe_torch.SineSPE(3, 4, sines=6)
        torch.manual_seed(5)
        freqs, offsets, gains = torch.randn(3, 4, 6) - 4, torch.randn(3, 4, 6), torch.randn(3, 4, 6)
        self.assertTrue(torch.equal(spe.freqs.data, freqs) and torch.equal(spe.offsets.data, offsets))
        # gains / (sqrt(|gains|_K) / 2)
        self.assertLess(max_error(spe.gains.data, gains * 2 / gains.norm(dim=-1, keepdim=True).sqrt()), 1e-6)

    def test_spread_initialisation(self):
        spe = spe_torch.SineSPE(2, 4, sines=3, init="spread").double()
        angular = 2 * math.pi * torch.sigmoid(spe.freqs.data) / 2            # (H, D, K)
        i = torch.arange(12, dtype=F64).view(4, 3)                            # i = d K + k
        for h in range(2):
            self.assertLess(max_error(angular[h], 10000.0 ** (-i / 12)), 1e-6)

    def test_fused_forward_matches_the_formula(self):
        spe, _ = self.module()
        q, k = randn(2, 7, self.H, self.D, seed=1), randn(2, 7, self.H, self.D, seed=2)
        torch.manual_seed(3)
        q_hat, k_hat = spe(q, k, start=4)                                     # positions 4 .. 10
        torch.manual_seed(3)
        z = torch.randn(self.H, self.D, 2 * self.K, self.R, dtype=F64)
        positions = range(4, 11)
        qbar = sine_code_reference(spe.freqs, spe.offsets, spe.gains, z, positions, True)
        kbar = sine_code_reference(spe.freqs, spe.offsets, spe.gains, z, positions, False)
        self.assertLess(max_error(q_hat, apply_code(q, qbar)), 1e-12)
        self.assertLess(max_error(k_hat, apply_code(k, kbar)), 1e-12)

    def test_gated_filter_matches_the_formula(self):
        spe, gated = self.module()
        q, k = randn(2, 6, self.H, self.D, seed=4), randn(2, 6, self.H, self.D, seed=5)
        torch.manual_seed(6)
        q_hat, k_hat = gated(q, k, spe.draw())
        torch.manual_seed(6)
        z = torch.randn(self.H, self.D, 2 * self.K, self.R, dtype=F64)
        eps = torch.randn(self.H, self.D, self.R, dtype=F64)
        for side, x, out in ((True, q, q_hat), (False, k, k_hat)):
            ungated = sine_code_reference(spe.freqs, spe.offsets, spe.gains, z, range(6), side)
            code = gate_reference(ungated, gated.gate, eps)
            self.assertLess(max_error(out, apply_code(x, code)), 1e-12)

    def test_fused_and_materialised_paths_agree_in_value_and_gradient(self):
        spe, gated = self.module()
        q, k = randn(1, 5, self.H, self.D, seed=7), randn(1, 5, self.H, self.D, seed=8)
        code = gated.gated_code(spe.draw(), gated.sample_gate_noise(self.R, F64))
        fused = [spe_torch.filter_with_code(x, code, side) for x, side in ((q, True), (k, False))]
        qbar, kbar = spe_torch.sine_code_at(code, torch.arange(5))
        slow = [apply_code(q, qbar), apply_code(k, kbar)]
        params = [spe.freqs, spe.offsets, spe.gains, gated.gate]
        weight = randn(1, 5, self.H, self.R, seed=9)
        grads = [torch.autograd.grad(sum((t * weight).sum() for t in outs), params, retain_graph=True)
                 for outs in (fused, slow)]
        for a, b in zip(fused + list(grads[0]), slow + list(grads[1])):
            self.assertLess(max_error(a, b), 1e-12)

    def test_gradcheck_through_the_fused_filter(self):
        spe, gated = self.module()
        code = gated.gated_code(spe.draw(), gated.sample_gate_noise(self.R, F64))
        x = randn(2, 4, self.H, self.D, seed=10).requires_grad_()
        factors = [t.detach().clone().requires_grad_() for t in code[:5]]  # the gate noise is used up (None)

        def filtered(x, *factors):
            return spe_torch.filter_with_code(x, spe_torch.SineCode(*factors), True, 2)
        self.assertTrue(torch.autograd.gradcheck(filtered, (x, *factors)))

    def test_exact_features_give_the_kernel(self):
        spe, gated = self.module()
        q, k = randn(1, 6, self.H, self.D, seed=11), randn(1, 6, self.H, self.D, seed=12)
        fq, fk = spe.exact_features(q, True), spe.exact_features(k, False)      # (B, N, H, D, 2K)
        f, lam = torch.sigmoid(spe.freqs.data) / 2, F.softplus(spe.gains.data)
        for j in range(2 * self.K):
            phase = 2 * math.pi * f[..., j // 2] * 3 + spe.offsets.data[..., j // 2]
            want = q[0, 3] * lam[..., j // 2] * (phase.cos() if j % 2 == 0 else phase.sin()) / math.sqrt(2 * self.K)
            self.assertLess(max_error(fq[0, 3, :, :, j], want), 1e-12)
        s = torch.sigmoid(gated.gate.data)
        gq, gk = gated.gate_features(q, fq), gated.gate_features(k, fk)         # (B, N, H, D (2K + 1))
        for m, n in ((5, 1), (2, 4)):
            want = ((1 - s) * sine_kernel_reference(spe.freqs, spe.offsets, spe.gains, m - n) + s) * q[0, m] * k[0, n]
            self.assertLess(max_error((gq[0, m] * gk[0, n]).sum(-1), want.sum(-1)), 1e-12)

    def test_gated_coefficients_give_the_gated_exact_features(self):
        spe, gated = self.module()
        x = randn(2, 5, self.H, self.D, seed=14)
        for side in (True, False):
            rows = gated.gate_coefficients(spe.exact_coefficients(5, side, 300, torch.float64))
            self.assertEqual(tuple(rows.shape), (5, self.H, self.D, 2 * self.K + 1))
            want = gated.gate_features(x, spe.exact_features(x, side, 300))
            self.assertLess(max_error((x.unsqueeze(-1) * rows).flatten(3), want), 1e-14)
        with self.assertRaisesRegex(ValueError, "coefficients must be \\(N, H, D, J\\)"):
            gated.gate_coefficients(torch.zeros(5, self.H, self.D + 1, 4, dtype=torch.float64))
        with self.assertRaisesRegex(ValueError, "length must be >= 0, got -1"):
            spe.exact_coefficients(-1, True)

    def test_orthogonal_noise_makes_each_features_kernel_exact(self):
        torch.manual_seed(13)
        for r in (4, 9):  # 2K = 4: one and two features per block
            spe = spe_torch.SineSPE(self.H, self.D, self.K, r, noise="orthogonal").double()
            qbar, kbar = spe_torch.sine_code_at(spe.factors(spe.sample_noise()), torch.arange(5))
            products = torch.einsum("mhdr,nhdr->hdmn", qbar, kbar)
            for m, n in ((0, 0), (4, 1), (1, 3)):
                want = sine_kernel_reference(spe.freqs, spe.offsets, spe.gains, m - n) * r / math.sqrt(r * self.D)
                self.assertLess(max_error(products[..., m, n], want), 1e-12)
        with self.assertRaisesRegex(ValueError, "SineSPE: noise must be one of gaussian, orthogonal, got 'sobol'"):
            spe_torch.SineSPE(self.H, self.D, self.K, 4, noise="sobol")
        gated = spe_torch.SPEFilter(self.H, self.D, noise="orthogonal").double()
        for r in (8, 2):  # D = 3 rows: one block, or blocks of 2 rows
            eps = gated.sample_gate_noise(r, F64)                                   # (H, D, R)
            gram = eps @ eps.transpose(1, 2) * math.sqrt(self.D * r)
            for d in range(self.D):
                for e in range(self.D):
                    if d // r == e // r:
                        self.assertLess(abs(gram[0, d, e].item() - (r if d == e else 0.0)), 1e-9, (r, d, e))

    def test_gate_noise_drawn_with_the_code_makes_the_gated_scores_exact(self):
        """R = (2K + 1) D: the code's rows and the gate's in one orthogonal block per head, so each
        draw's gated scores are sum_d q_d k_d sqrt(R / D) ((1 - s_d) P_d(m - n) + s_d); the gate's own
        orthogonal draw is not."""
        r, length = (2 * self.K + 1) * self.D, 6
        torch.manual_seed(14)
        joint = spe_torch.SineSPE(self.H, self.D, self.K, r, noise="orthogonal", gate_noise=True).double()
        apart = spe_torch.SineSPE(self.H, self.D, self.K, r, noise="orthogonal").double()
        apart.load_state_dict(joint.state_dict())
        gated = spe_torch.SPEFilter(self.H, self.D, noise="orthogonal").double()
        q, k = randn(1, length, self.H, self.D, seed=15), randn(1, length, self.H, self.D, seed=16)
        s = torch.sigmoid(gated.gate.data)

        def worst_error(spe):
            qhat, khat = gated(q, k, spe.draw())
            scores = torch.einsum("bmhr,bnhr->hmn", qhat, khat)
            errors = []
            for m, n in ((0, 0), (5, 1), (2, 4)):
                p = sine_kernel_reference(spe.freqs, spe.offsets, spe.gains, m - n)
                want = (math.sqrt(r / self.D) * ((1 - s) * p + s) * q[0, m] * k[0, n]).sum(-1)
                errors.append(max_error(scores[:, m, n], want))
            return max(errors)
        self.assertEqual(list(joint.sample_noise().shape), [self.H, self.D, 2 * self.K + 1, r])
        self.assertLess(worst_error(joint), 1e-10)
        self.assertGreater(worst_error(apart), 1e-3)

    def test_gate_starts_around_its_mean(self):
        """N(gate_mean, 1) over 8 x 64 entries: the sample mean's sd is 1 / sqrt(512), 5 of them bound it."""
        torch.manual_seed(5)
        for mean in (0.0, -3.0):
            gate = spe_torch.SPEFilter(8, 64, gate_mean=mean).gate.data
            self.assertLess(abs(gate.mean().item() - mean), 5 / math.sqrt(512))
        with self.assertRaisesRegex(ValueError, "SPEFilter: gate_mean must be finite, got nan"):
            spe_torch.SPEFilter(2, 3, gate_mean=float("nan"))

    def test_expected_kernel(self):
        spe, gated = self.module()
        kernel = gated.expected_kernel(spe.expected_kernel(4, 16), 16)          # (H, D, 7)
        s = torch.sigmoid(gated.gate.data)
        for lag in range(-3, 4):
            p = sine_kernel_reference(spe.freqs, spe.offsets, spe.gains, lag)
            want = math.sqrt(16 / self.D) * ((1 - s) * p + s)
            self.assertLess(max_error(kernel[..., lag + 3], want), 1e-12)

    def test_sampled_code_has_the_exact_kernel_in_expectation(self):
        """The gated code's products against their exact mean and variance, bounds from the sample size.

        Each (h, d) pair tests its own lag, so the standardised errors are independent. One
        estimate sum_r Qbar'(m, r) Kbar'(n, r) adds R i.i.d. products of the jointly Gaussian
        a = Qbar'(m, r), b = Kbar'(n, r), with Var(a) = Var(b) = ((1 - s) sigma^2 + s) / sqrt(R D),
        sigma^2 = (1 / 2K) sum_k lambda_k^2, and Cov(a, b) = c = ((1 - s) P + s) / sqrt(R D); so
        its mean is R c and its variance R (Var(a) Var(b) + c^2)."""
        H, D, K, R, L, draws = 4, 8, 3, 64, 12, 160
        torch.manual_seed(13)
        spe = spe_torch.SineSPE(H, D, sines=K, realizations=R).double()
        gated = spe_torch.SPEFilter(H, D).double()
        m = torch.arange(H * D).view(H, D) % L
        n = (m * 5 + 3) % L
        s, lam = torch.sigmoid(gated.gate.data), F.softplus(spe.gains.data)
        p = sine_kernel_reference(spe.freqs, spe.offsets, spe.gains, (m - n).double())   # (H, D), each its own lag
        variance = ((1 - s) * lam.pow(2).sum(-1) / (2 * K) + s) / math.sqrt(R * D)
        covariance = ((1 - s) * p + s) / math.sqrt(R * D)
        mean, sd = R * covariance, (R * (variance ** 2 + covariance ** 2)).sqrt()
        z = []
        with torch.no_grad():
            for _ in range(draws):
                code = gated.gated_code(spe.draw(), gated.sample_gate_noise(R, F64))
                qbar, kbar = spe_torch.sine_code_at(code, torch.arange(L))          # (L, H, D, R)
                hh, dd = torch.meshgrid(torch.arange(H), torch.arange(D), indexing="ij")
                estimate = (qbar[m, hh, dd] * kbar[n, hh, dd]).sum(-1)               # (H, D)
                z.append(((estimate - mean) / sd).flatten())
        assert_standardised(self, torch.cat(z), R)


def assert_standardised(test, z, terms, sigmas=5.0):
    """z: independent standardised errors, each of a sum of `terms` i.i.d. products of two jointly
    Gaussian variables: E[z] = 0, E[z^2] = 1 and Var(z^2) = 2 + kappa / terms with kappa, the
    excess kurtosis of one product, at most 12. Both sample means within `sigmas` standard errors."""
    count = z.numel()
    test.assertLess(abs(z.mean().item()), sigmas / math.sqrt(count), "biased")
    test.assertLess(abs(z.pow(2).mean().item() - 1), sigmas * math.sqrt((2 + 12 / terms) / count), "spread")


class ConvSPETest(unittest.TestCase):
    def test_state_dict_names_are_the_cpp_ones(self):
        conv = spe_torch.ConvSPE(2, 3, kernel_size=4)
        self.assertEqual(list(conv.state_dict()), CPP_NAMES["ConvSPE"])
        self.assertEqual(conv.weight_q.shape, (2, 3, 4))
        self.assertEqual(spe_torch.ConvSPE(2, 3, ndim=2, kernel_size=4).weight_k.shape, (2, 3, 4, 4))

    def test_code_is_the_cropped_correlation(self):
        H, D, S, L, R = 2, 2, 3, 5, 4
        for algorithm in ("direct", "fft"):
            conv = spe_torch.ConvSPE(H, D, kernel_size=S, realizations=R, algorithm=algorithm).double()
            torch.manual_seed(14)
            qbar, kbar = conv([L])
            torch.manual_seed(14)
            z = torch.randn(L + 4 * S, H, D, R, dtype=F64)  # noise rows by position, as C++ draws them
            for w, code in ((conv.weight_q, qbar), (conv.weight_k, kbar)):
                want = torch.zeros(L, H, D, R, dtype=F64)
                for t in range(L):
                    for j in range(S):
                        want[t] += w.data[..., j, None] * z[t + S + j]
                self.assertLess(max_error(code, want / (R * D) ** 0.25), 1e-12)

    def test_2d_code_is_flattened_row_major(self):
        H, D, S, R = 1, 2, 2, 3
        conv = spe_torch.ConvSPE(H, D, ndim=2, kernel_size=S, realizations=R).double()
        torch.manual_seed(15)
        qbar, _ = conv([3, 2])
        torch.manual_seed(15)
        z = torch.randn(3 + 4 * S, 2 + 4 * S, H, D, R, dtype=F64)  # noise rows by position, as C++ draws them
        for t1 in range(3):
            for t2 in range(2):
                want = sum(conv.weight_q.data[..., a, b, None] * z[t1 + S + a, t2 + S + b]
                           for a in range(S) for b in range(S))
                self.assertLess(max_error(qbar[t1 * 2 + t2], want / (R * D) ** 0.25), 1e-12)

    def test_expected_kernel(self):
        conv = spe_torch.ConvSPE(2, 3, kernel_size=4, realizations=9).double()
        kernel = conv.expected_kernel([3])                                       # (H, D, 5)
        wq, wk = conv.weight_q.data, conv.weight_k.data
        for lag in range(-2, 3):
            want = sum(wq[..., j] * wk[..., j + lag] for j in range(4) if 0 <= j + lag < 4) * math.sqrt(9 / 3)
            self.assertLess(max_error(kernel[..., lag + 2], want), 1e-12)
        self.assertEqual(spe_torch.ConvSPE(1, 2, ndim=2, kernel_size=3).expected_kernel([2, 4]).shape, (1, 2, 3, 7))

    def test_materialised_gated_filter(self):
        conv = spe_torch.ConvSPE(2, 3, kernel_size=3, realizations=4).double()
        gated = spe_torch.SPEFilter(2, 3).double()
        qbar, kbar = conv([6])
        q, k = randn(2, 5, 2, 3, seed=16), randn(2, 5, 2, 3, seed=17)
        torch.manual_seed(18)
        q_hat, k_hat = gated.forward_materialised(q, k, qbar, kbar)
        torch.manual_seed(18)
        eps = torch.randn(2, 3, 4, dtype=F64)
        self.assertLess(max_error(q_hat, apply_code(q, gate_reference(qbar, gated.gate, eps))), 1e-12)
        self.assertLess(max_error(k_hat, apply_code(k, gate_reference(kbar, gated.gate, eps))), 1e-12)


class FeatureMapTest(unittest.TestCase):
    def test_state_dict_names_are_the_cpp_ones(self):
        self.assertEqual(list(spe_torch.FeatureMap("favor", 4, features=6).state_dict()), CPP_NAMES["FeatureMap favor"])
        self.assertEqual(list(spe_torch.FeatureMap("elu", 4).state_dict()), CPP_NAMES["FeatureMap elu"])

    def test_elu_and_relu(self):
        x = randn(2, 3, 4)
        elu = spe_torch.FeatureMap("elu", 4)(x, "query")
        self.assertLess(max_error(elu, torch.where(x > 0, x + 1, x.exp())), 1e-15)
        self.assertTrue(torch.equal(spe_torch.FeatureMap("relu", 4)(x, "key"), x.clamp_min(0)))

    def test_favor_features_and_orthogonality(self):
        torch.manual_seed(19)
        phi = spe_torch.FeatureMap("favor", 4, features=6).double()
        w = phi.projection
        self.assertLess(max_error((w[:4] @ w[:4].t()).triu(1), torch.zeros(4, 4, dtype=F64)), 1e-6)  # made in float32
        x = randn(3, 4, seed=20)
        xs = x / 4 ** 0.25
        raw = torch.exp(xs @ w.t() - xs.pow(2).sum(-1, keepdim=True) / 2) / math.sqrt(6)
        keys = phi(x, "key")
        self.assertLess(max_error(keys, raw * math.exp(-w.pow(2).sum(-1).max().item() / 2)), 1e-12)
        queries = phi(x, "query")                                                # each row shifted by a constant
        self.assertLess(max_error(queries / queries.sum(-1, keepdim=True), raw / raw.sum(-1, keepdim=True)), 1e-12)

    def test_redraw_on_schedule(self):
        phi = spe_torch.FeatureMap("favor", 4, redraw_interval=2)
        before = phi.projection.clone()
        self.assertEqual([phi.after_training_step(1), phi.after_training_step(2), phi.after_training_step(3)],
                         [False, True, False])
        self.assertFalse(torch.equal(before, phi.projection))


class LinearAttentionTest(unittest.TestCase):
    def inputs(self, n=6, dtype=F64):
        q, k = randn(2, n, 2, 3, seed=21).exp(), randn(2, n, 2, 3, seed=22).exp()
        return q.to(dtype), k.to(dtype), randn(2, n, 2, 4, seed=23).to(dtype)

    def test_non_causal_and_causal_match_the_formula(self):
        q, k, v = self.inputs()
        padding = torch.tensor([[True] * 6, [True, False, True, True, False, True]])
        for causal in (False, True):
            attention = spe_torch.LinearAttention(causal=causal, chunk=4)
            want = linear_reference(q, k, v, 1e-6, causal, padding)
            self.assertLess(max_error(attention(q, k, v, padding), want), 1e-12)
        self.assertLess(max_error(spe_torch.causal_linear_attention_quadratic(q, k, v),
                                  spe_torch.causal_linear_attention(q, k, v)), 1e-12)

    def test_positioned_forms_match_the_formula(self):
        q, k, v = self.inputs(n=7)
        psi_q, psi_k = randn(2, 7, 2, 5, seed=24), randn(2, 7, 2, 5, seed=25)
        want = linear_reference(q, k, v, 1e-6, True, None, psi_q, psi_k)
        got = spe_torch.causal_linear_attention_positioned(q, k, v, psi_q, psi_k, chunk=3)
        self.assertLess(max_error(got, want), 1e-12)
        want = linear_reference(q, k, v, 1e-6, False, None, psi_q, psi_k)
        self.assertLess(max_error(spe_torch.linear_attention_positioned(q, k, v, psi_q, psi_k), want), 1e-12)

    def test_separable_form_matches_its_materialised_features(self):
        q, k, v = self.inputs(n=7)
        c_q, c_k = randn(7, 2, 3, 4, seed=26), randn(7, 2, 3, 4, seed=27)
        psi_q, psi_k = (q.unsqueeze(-1) * c_q).flatten(3), (k.unsqueeze(-1) * c_k).flatten(3)
        padding = torch.tensor([[True] * 7, [True, False, True, True, False, True, True]])
        want = linear_reference(q, k, v, 1e-6, False, padding, psi_q, psi_k)
        self.assertLess(max_error(spe_torch.linear_attention_separable(q, k, v, c_q, c_k, padding), want), 1e-12)
        got32 = spe_torch.linear_attention_separable(q.float(), k.float(), v.float(), c_q.float(), c_k.float(), padding)
        self.assertLess(max_error(got32.double(), want), 1e-4)
        want = linear_reference(q, k, v, 1e-6, True, padding, psi_q, psi_k)
        self.assertLess(max_error(spe_torch.causal_linear_attention_separable(q, k, v, c_q, c_k, padding), want), 1e-12)
        leaves = [t.clone().requires_grad_() for t in (q[:, :4], k[:, :4], v[:, :4], c_q[:4], c_k[:4])]
        for causal in (False, True):
            self.assertTrue(torch.autograd.gradcheck(
                lambda *x: torch.ops.spe.separable_linear_numerator(*x, causal), tuple(leaves)))
        with self.assertRaisesRegex(ValueError, r"coefficients_k must be \(N, H, M, J\)"):
            spe_torch.linear_attention_separable(q, k, v, c_q, c_k[..., :3])

    def test_gradcheck_through_the_fused_causal_op(self):
        q, k, v = [t.requires_grad_() for t in self.inputs(n=5)]
        self.assertTrue(torch.autograd.gradcheck(
            lambda a, b, c: spe_torch.causal_linear_attention(a, b, c, chunk=2), (q, k, v)))

    def test_chunk_default_is_the_ops_one(self):
        for op in (torch.ops.spe.causal_linear_attention, torch.ops.spe.decayed_causal_linear_attention):
            chunk = [a for a in op.default._schema.arguments if a.name == "chunk"][0]
            self.assertEqual(chunk.default_value, spe_torch.linear.CAUSAL_CHUNK)
        self.assertEqual(spe_torch.LinearAttention().chunk, spe_torch.linear.CAUSAL_CHUNK)

    def test_float32_runs_on_the_fused_op(self):
        q, k, v = self.inputs(dtype=torch.float32)
        want = linear_reference(q.double(), k.double(), v.double(), 1e-6, True)
        self.assertLess(max_error(spe_torch.causal_linear_attention(q, k, v).double(), want), 1e-5)


ROTARY_SCALINGS = (("none", 1.0), ("linear", 4.0), ("ntk", 4.0), ("yarn", 4.0))


class RotaryTest(unittest.TestCase):
    D, L = 16, 512  # with L = 512 YaRN's ramp keeps pair 0, blends pairs 1 to 3 and interpolates the rest

    def encoding(self, scaling, factor):
        return spe_torch.RotaryEncoding(self.D, scaling=scaling, factor=factor, original_length=self.L)

    def test_angles_of_each_scaling_pair_by_pair(self):
        x = randn(1, 4, 1, self.D, seed=40)
        for scaling, s in ROTARY_SCALINGS:
            rotary = self.encoding(scaling, s)
            thetas = rotary_theta_reference(self.D, 10000.0, scaling, s, self.L)
            self.assertLess(max_error(rotary.frequencies(), torch.tensor(thetas, dtype=F64)), 1e-15, scaling)
            magnitude = 0.1 * math.log(s) + 1 if scaling == "yarn" else 1.0
            y = rotary(x, start=3)
            for n in range(4):
                for i, theta in enumerate(thetas):
                    x0, x1 = x[0, n, 0, 2 * i], x[0, n, 0, 2 * i + 1]
                    c, sn = math.cos((3 + n) * theta), math.sin((3 + n) * theta)
                    want = torch.stack([x0 * c - x1 * sn, x0 * sn + x1 * c]) * magnitude
                    self.assertLess(max_error(y[0, n, 0, 2 * i:2 * i + 2], want), 1e-12, (scaling, n, i))

    def test_scores_depend_on_the_distance_only(self):
        q, k = randn(self.D, seed=41), randn(self.D, seed=42)
        for scaling, s in ROTARY_SCALINGS:
            rotary = self.encoding(scaling, s)
            rq, rk = (rotary(x.expand(1, 9, 1, self.D), start=5)[0, :, 0] for x in (q, k))
            scores = rq @ rk.t()                                                   # (9, 9)
            self.assertLess(max_error(scores[1:, 1:], scores[:-1, :-1]), 1e-12, scaling)
            magnitude = 0.1 * math.log(s) + 1 if scaling == "yarn" else 1.0
            self.assertLess(abs(scores[0, 0] - magnitude ** 2 * (q @ k)), 1e-12, scaling)

    def test_no_state_and_set_scaling(self):
        rotary = spe_torch.RotaryEncoding(8)
        self.assertEqual(list(rotary.state_dict()), CPP_NAMES["RotaryEncoding"])
        rotary.set_scaling("linear", 2.0)
        self.assertLess(max_error(rotary.frequencies(), spe_torch.RotaryEncoding(8).frequencies() / 2), 1e-16)
        with self.assertRaisesRegex(ValueError, "yarn scaling needs original_length"):
            rotary.set_scaling("yarn", 2.0)
        self.assertEqual((rotary.scaling, rotary.factor), ("linear", 2.0))      # unchanged when refused


class DecayTest(unittest.TestCase):
    def test_start_and_state_dict(self):
        for heads in (1, 8):
            exponents = [5.0] if heads == 1 else [5 + 7 * h / (heads - 1) for h in range(heads)]
            want = torch.tensor([math.log(1 - 2 ** -e) for e in exponents], dtype=F64)
            for learnable in (False, True):
                decay = spe_torch.Decay(heads, learnable=learnable)
                self.assertEqual(list(decay.state_dict()), CPP_NAMES["Decay"])
                self.assertEqual(isinstance(decay.logits, torch.nn.Parameter), learnable)
                self.assertEqual([n for n, _ in decay.named_buffers()], [] if learnable else ["logits"])
                self.assertLess(max_error(decay.log_decay().double() / want, torch.ones(heads, dtype=F64)), 1e-5)

    def test_kernel_and_score_bias(self):
        decay = spe_torch.Decay(3).double()
        log_g = decay.log_decay()
        self.assertLess(max_error(decay.kernel(4), decay_kernel_reference(log_g, 4)), 1e-15)
        bias = decay.score_bias(2, 3, 5)                                           # (H, Nq, Nk)
        for m in range(3):
            for n in range(5):
                self.assertLess(max_error(bias[:, m, n], log_g * abs(2 + m - n)), 1e-15)

    def test_attention_matches_the_loops(self):
        q, k, v = relative_inputs()
        log_decay = torch.tensor([-0.3, -1.5], dtype=F64)
        padding = torch.tensor([[True] * 6, [False, True, True, False, True, False]])
        kernel = decay_kernel_reference(log_decay, 6)
        for causal in (False, True):
            for keys in (None, padding):
                got = spe_torch.decayed_linear_attention(q, k, v, log_decay, causal, keys)
                want = weighted_linear_reference(q, k, v, kernel, causal, keys)
                self.assertLess(max_error(got, want), 1e-12, (causal, keys is not None))

    def test_chunk_sizes_agree(self):
        q, k, v = relative_inputs(n=13)
        log_decay = torch.tensor([-0.2, -0.9], dtype=F64)
        want = decayed_product_reference(q, k, v, log_decay)
        for chunk in (1, 4, 5, 64):
            self.assertLess(max_error(spe_torch.decayed_causal_product(q, k, v, log_decay, chunk), want), 1e-12, chunk)

    def test_long_sequence_stays_finite(self):
        """N = 2000 in float32, g^-N far beyond its range for g = e^-1: every factor's exponent is
        non-negative. Every 111th row against the quadratic form in float64."""
        q, k, v = (x[:1] for x in relative_inputs(n=2000))
        log_decay = torch.tensor([-1.0, -1e-3])
        rows, keys = torch.arange(0, 2000, 111), torch.arange(2000)
        lags = (rows[:, None] - keys[None, :]).double()                            # (rows, N)
        for causal in (False, True):
            weights = torch.exp(log_decay.double().view(2, 1, 1) * lags.abs()) * (lags >= 0 if causal else 1)
            sims = torch.einsum("bmhk,bnhk->bhmn", q[:, rows], k) * weights        # (B, H, rows, N)
            want = torch.einsum("bhmn,bnhd->bmhd", sims, v) / sims.sum(-1).transpose(1, 2).unsqueeze(-1)
            got = spe_torch.decayed_linear_attention(q.float(), k.float(), v.float(), log_decay, causal)
            self.assertTrue(torch.isfinite(got).all(), causal)
            self.assertLess(max_error(got[:, rows].double(), want), 1e-4, causal)

    def test_gradcheck(self):
        q, k, v = (x[:1, :4, :, :2].clone().requires_grad_() for x in relative_inputs())
        log_decay = torch.tensor([-0.4, -1.1], dtype=F64, requires_grad=True)
        for causal in (False, True):
            self.assertTrue(torch.autograd.gradcheck(
                lambda a, b, c, g: spe_torch.decayed_linear_attention(a, b, c, g, causal), (q, k, v, log_decay)))
        self.assertTrue(torch.autograd.gradcheck(
            lambda a, b, c, g: spe_torch.decayed_causal_product(a, b, c, g, chunk=2), (q, k, v, log_decay)))


class ToeplitzTest(unittest.TestCase):
    def test_parameter_and_clipped_lags(self):
        toeplitz = spe_torch.ToeplitzBias(2, clip=2).double()
        self.assertEqual(list(toeplitz.state_dict()), CPP_NAMES["ToeplitzBias"])
        self.assertTrue(torch.equal(toeplitz.bias.data, torch.zeros(2, 5, dtype=F64)))
        with torch.no_grad():
            toeplitz.bias.copy_(randn(2, 5, seed=46))
        b = toeplitz.bias.data
        lag_bias, bias = toeplitz.lag_bias(4), toeplitz.score_bias(1, 3, 5)        # (H, 7), (H, Nq, Nk)
        for lag in range(-3, 4):
            self.assertTrue(torch.equal(lag_bias[:, lag + 3], b[:, min(max(lag, -2), 2) + 2]), lag)
        for m in range(3):
            for n in range(5):
                self.assertTrue(torch.equal(bias[:, m, n], b[:, min(max(1 + m - n, -2), 2) + 2]), (m, n))
        self.assertTrue(torch.equal(toeplitz.kernel(4), lag_bias.exp()))

    def test_attention_matches_the_loops(self):
        q, k, v = relative_inputs(n=7)
        lag_bias = randn(2, 13, seed=47)
        padding = torch.tensor([[True] * 7, [False, False, True, True, False, True, False]])
        for causal in (False, True):
            for keys in (None, padding):                  # causal: the second row's first queries see no key
                got = spe_torch.toeplitz_linear_attention(q, k, v, lag_bias, causal, keys)
                want = weighted_linear_reference(q, k, v, lag_bias.exp(), causal, keys)
                self.assertLess(max_error(got, want), 1e-12, (causal, keys is not None))

    def test_float32_against_float64(self):
        """The FFT rounds at the scale of the whole sequence's sums, which the first causal rows
        divide by their few keys' weights: a bias spread over e^+-1 keeps them within 1e-4."""
        q, k, v = relative_inputs(n=256)
        lag_bias = 0.3 * randn(2, 511, seed=48)
        for causal in (False, True):
            want = spe_torch.toeplitz_linear_attention(q, k, v, lag_bias, causal)
            got = spe_torch.toeplitz_linear_attention(q.float(), k.float(), v.float(), lag_bias.float(), causal)
            self.assertLess(max_error(got.double(), want) / want.abs().max().item(), 1e-4, causal)

    def test_clipped_form_matches_the_loops(self):
        """Windows of 16 with prefix sums beyond (clip 3 at N 40: three blocks, the last cut short),
        and the FFT when the clip reaches N (clip 12 at N 7)."""
        for n, clip in ((40, 3), (7, 12)):
            q, k, v = relative_inputs(n=n)
            bias = randn(2, 2 * clip + 1, seed=55)
            lags = torch.arange(-(n - 1), n).clamp(-clip, clip) + clip
            padding = torch.ones(2, n, dtype=torch.bool)
            padding[1, 0] = padding[1, n - 2] = False
            for causal in (False, True):
                for keys in (None, padding):
                    got = spe_torch.clipped_toeplitz_linear_attention(q, k, v, bias, causal, keys)
                    want = weighted_linear_reference(q, k, v, bias[:, lags].exp(), causal, keys)
                    self.assertLess(max_error(got, want), 1e-12, (n, clip, causal, keys is not None))
        q, k, v = (x[:1, :35, :, :2].clone().requires_grad_() for x in relative_inputs(n=35))
        bias = randn(2, 5, seed=56).requires_grad_()
        for causal in (False, True):
            self.assertTrue(torch.autograd.gradcheck(
                lambda a, b, c, w: spe_torch.clipped_toeplitz_linear_attention(a, b, c, w, causal), (q, k, v, bias)))
        with self.assertRaisesRegex(ValueError, r"bias must be \(H, 2 clip \+ 1\) with H = 2 and clip >= 1"):
            spe_torch.clipped_toeplitz_linear_attention(q, k, v, torch.zeros(2, 4, dtype=F64), True)

    def test_gradcheck(self):
        q, k, v = (x[:1, :4, :, :2].clone().requires_grad_() for x in relative_inputs())
        lag_bias = randn(2, 7, seed=49).requires_grad_()
        for causal in (False, True):
            self.assertTrue(torch.autograd.gradcheck(
                lambda a, b, c, w: spe_torch.toeplitz_linear_attention(a, b, c, w, causal), (q, k, v, lag_bias)))


class SoftmaxTest(unittest.TestCase):
    def test_matches_the_loops(self):
        q, k, v = randn(2, 4, 2, 3, seed=50), randn(2, 6, 2, 3, seed=51), randn(2, 6, 2, 5, seed=52)
        padding = torch.tensor([[True] * 6, [False, False, False, True, True, False]])
        bias = spe_torch.ToeplitzBias(2, clip=3).double()
        with torch.no_grad():
            bias.bias.copy_(randn(2, 7, seed=53))
        for causal in (False, True):                      # causal with Nq < Nk: aligned at the end
            for keys in (None, padding):
                for score_bias in (None, bias.score_bias(2, 4, 6)):
                    got = spe_torch.softmax_attention(q, k, v, causal, keys, score_bias)
                    want = softmax_reference(q, k, v, causal, keys, score_bias)
                    self.assertLess(max_error(got, want), 1e-12, (causal, keys is not None, score_bias is not None))

    def test_a_query_without_keys_gets_zeros(self):
        q = randn(1, 3, 1, 2, seed=54)
        padding = torch.tensor([[False, True, True]])
        out = spe_torch.softmax_attention(q, q, q, True, padding)
        self.assertTrue(torch.equal(out[0, 0], torch.zeros(1, 2, dtype=F64)) and torch.isfinite(out).all())


class BadInput(unittest.TestCase):
    def assert_names(self, error, pattern, call):
        with self.assertRaisesRegex(error, pattern):
            call()

    def test_modules_name_the_argument(self):
        spe, gated = spe_torch.SineSPE(2, 3, sines=2), spe_torch.SPEFilter(2, 3)
        good = torch.randn(1, 4, 2, 3)
        self.assert_names(ValueError, r"SineSPE.forward: q must be 4-D \(B, N, H, D\), got shape \[4, 2, 3\]",
                          lambda: spe(good[0], good))
        self.assert_names(ValueError, r"SineSPE.forward: k must be \(B, N, H, D\) with H = 2, D = 3, "
                                      r"got shape \[1, 4, 3, 3\]",
                          lambda: spe(good, torch.randn(1, 4, 3, 3)))
        self.assert_names(TypeError, r"SineSPE.forward: q must have the dtype of the parameters "
                                     r"\(torch.float32\), got torch.float64",
                          lambda: spe(good.double(), good))
        self.assert_names(TypeError, "SineSPE.forward: q must be floating point", lambda: spe(good.long(), good))
        self.assert_names(ValueError, r"SPEFilter.forward: q \[1, 4, 2, 3\] and k \[1, 5, 2, 3\] "
                                      r"must have the same shape",
                          lambda: gated(good, torch.randn(1, 5, 2, 3), spe.draw()))
        self.assert_names(ValueError, "SineSPE: heads must be positive, got 0", lambda: spe_torch.SineSPE(0, 3))
        self.assert_names(ValueError, "SineSPE: init must be one of reference, spread, got 'bogus'",
                          lambda: spe_torch.SineSPE(2, 3, init="bogus"))
        self.assert_names(ValueError, "ConvSPE: ndim must be 1", lambda: spe_torch.ConvSPE(2, 3, ndim=3))
        self.assert_names(ValueError, r"ConvSPE.forward: shape must have 1 extent\(s\)",
                          lambda: spe_torch.ConvSPE(2, 3, kernel_size=2)([3, 3]))

    def test_attention_and_features_name_the_argument(self):
        q = torch.rand(1, 4, 2, 3)
        self.assert_names(ValueError, r"causal_linear_attention: phi_k \[1, 4, 2, 3\] and v \[1, 5, 2, 3\] must agree",
                          lambda: spe_torch.causal_linear_attention(q, q, torch.rand(1, 5, 2, 3)))
        self.assert_names(TypeError, "linear_attention: phi_q, phi_k and v must share a dtype",
                          lambda: spe_torch.linear_attention(q, q, q.double()))
        self.assert_names(ValueError, "linear_attention: v must be 4-D",
                          lambda: spe_torch.linear_attention(q, q, q[0]))
        self.assert_names(ValueError, r"key_padding must be \(B, Nk\) = \[1, 4\] bool",
                          lambda: spe_torch.linear_attention(q, q, q, torch.ones(1, 4)))
        self.assert_names(ValueError, r"FeatureMap: x must be \(..., 4\), got shape \[1, 4, 2, 3\]",
                          lambda: spe_torch.FeatureMap("elu", 4)(q, "query"))
        self.assert_names(ValueError, "FeatureMap: role must be 'query' or 'key', got 'value'",
                          lambda: spe_torch.FeatureMap("elu", 3)(q, "value"))


    def test_relative_positions_name_the_argument(self):
        q = torch.rand(1, 4, 2, 3)
        self.assert_names(ValueError, "RotaryEncoding: dim must be even", lambda: spe_torch.RotaryEncoding(7))
        self.assert_names(ValueError, "RotaryEncoding: scaling must be one of none, linear, ntk, yarn, got 'bogus'",
                          lambda: spe_torch.RotaryEncoding(8, scaling="bogus"))
        self.assert_names(ValueError, "RotaryEncoding: factor must be a finite value >= 1 .*, got 0.5",
                          lambda: spe_torch.RotaryEncoding(8, scaling="linear", factor=0.5))
        self.assert_names(ValueError, "RotaryEncoding: ntk scaling needs dim >= 4, got 2",
                          lambda: spe_torch.RotaryEncoding(2, scaling="ntk", factor=2.0))
        self.assert_names(ValueError, r"RotaryEncoding.forward: x must be \(B, N, H, D\) with D = 8, "
                                      r"got shape \[1, 4, 2, 3\]",
                          lambda: spe_torch.RotaryEncoding(8)(q))
        self.assert_names(ValueError, "Decay: heads must be positive, got 0", lambda: spe_torch.Decay(0))
        self.assert_names(ValueError, "Decay.kernel: length must be positive, got 0",
                          lambda: spe_torch.Decay(2).kernel(0))
        self.assert_names(ValueError, "ToeplitzBias: clip must be positive, got 0",
                          lambda: spe_torch.ToeplitzBias(2, 0))
        self.assert_names(ValueError, r"decayed_linear_attention: log_decay must be \(H,\) with H = 2, got shape \[3\]",
                          lambda: spe_torch.decayed_linear_attention(q, q, q, torch.zeros(3), True))
        self.assert_names(TypeError, "decayed_causal_product: log_decay must have the inputs' dtype torch.float32",
                          lambda: spe_torch.decayed_causal_product(q, q, q, torch.zeros(2, dtype=F64)))
        self.assert_names(ValueError, "decayed_causal_product: chunk must be positive, got 0",
                          lambda: spe_torch.decayed_causal_product(q, q, q, torch.zeros(2), 0))
        self.assert_names(ValueError, r"toeplitz_linear_attention: lag_bias must be \(H, 2N - 1\) = \(2, 7\), "
                                      r"got shape \[2, 9\]",
                          lambda: spe_torch.toeplitz_linear_attention(q, q, q, torch.zeros(2, 9), False))
        self.assert_names(ValueError, r"toeplitz_linear_attention: phi_q \(4 positions\) and phi_k \(5\)",
                          lambda: spe_torch.toeplitz_linear_attention(q, torch.rand(1, 5, 2, 3), torch.rand(1, 5, 2, 3),
                                                                      torch.zeros(2, 7), True))
        self.assert_names(ValueError, r"softmax_attention: score_bias must be \(H, Nq, Nk\) = \[2, 4, 4\], "
                                      r"got shape \[2, 4, 5\]",
                          lambda: spe_torch.softmax_attention(q, q, q, score_bias=torch.zeros(2, 4, 5)))
        self.assert_names(ValueError, r"softmax_attention: key_padding must be \(B, Nk\) = \[1, 4\] bool",
                          lambda: spe_torch.softmax_attention(q, q, q, key_padding=torch.ones(1, 3, dtype=torch.bool)))

class Block(torch.nn.Module):
    """A tiny attention block: gated sineSPE on q, k, elu+1 features, causal linear attention."""

    def __init__(self, heads, dim, realizations):
        super().__init__()
        self.spe = spe_torch.SineSPE(heads, dim, sines=2, realizations=realizations)
        self.filter = spe_torch.SPEFilter(heads, dim)
        self.phi = spe_torch.FeatureMap("elu", realizations)
        self.attention = spe_torch.LinearAttention(causal=True)

    def forward(self, q, k, v):
        # q, k: (B, N, H, D), v: (B, N, H, Dv) -> (B, N, H, Dv)
        q_hat, k_hat = self.filter(q, k, self.spe.draw())
        return self.attention(self.phi(q_hat, "query"), self.phi(k_hat, "key"), v)


class DecayedBlock(torch.nn.Module):
    """elu+1 features and causal linear attention decayed by learnable per-head decays."""

    def __init__(self, heads, dim):
        super().__init__()
        self.decay = spe_torch.Decay(heads, learnable=True)
        self.phi = spe_torch.FeatureMap("elu", dim)

    def forward(self, q, k, v):
        # q, k: (B, N, H, D), v: (B, N, H, Dv) -> (B, N, H, Dv)
        phi_q, phi_k = self.phi(q, "query"), self.phi(k, "key")
        return spe_torch.decayed_linear_attention(phi_q, phi_k, v, self.decay.log_decay(), True)


class TorchScriptTest(unittest.TestCase):
    def test_scripted_block_matches_eager(self):
        block = Block(2, 4, 8)
        scripted = torch.jit.script(block)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        q, k, v = (torch.randn(2, 9, 2, 4, generator=torch.Generator().manual_seed(s)) for s in (26, 27, 28))
        outs = []
        for model in (block, scripted, loaded):
            torch.manual_seed(29)
            outs.append(model(q, k, v))
        self.assertEqual(outs[0].shape, (2, 9, 2, 4))
        for out in outs[1:]:
            self.assertLess(max_error(out, outs[0]), 1e-6)

    def test_scripted_decayed_block(self):
        block = DecayedBlock(2, 4)
        scripted = torch.jit.script(block)
        q, k, v = (torch.randn(2, 7, 2, 4, generator=torch.Generator().manual_seed(s)) for s in (55, 56, 57))
        self.assertLess(max_error(scripted(q, k, v), block(q, k, v)), 1e-6)
        self.assertEqual(list(scripted.state_dict()), ["decay.logits"])

    def test_scripted_rotary_toeplitz_and_softmax(self):
        rotary = spe_torch.RotaryEncoding(4, scaling="yarn", factor=2.0, original_length=8)
        q, k, v = (torch.randn(1, 5, 2, 4, generator=torch.Generator().manual_seed(s)) for s in (58, 59, 60))
        self.assertLess(max_error(torch.jit.script(rotary)(q, 3), rotary(q, 3)), 1e-6)
        lag_bias, score_bias = torch.randn(2, 9), torch.randn(2, 5, 5)
        toeplitz = torch.jit.script(spe_torch.toeplitz_linear_attention)
        self.assertLess(max_error(toeplitz(q.exp(), k.exp(), v, lag_bias, True),
                                  spe_torch.toeplitz_linear_attention(q.exp(), k.exp(), v, lag_bias, True)), 1e-6)
        softmax = torch.jit.script(spe_torch.softmax_attention)
        self.assertLess(max_error(softmax(q, k, v, True, None, score_bias),
                                  spe_torch.softmax_attention(q, k, v, True, None, score_bias)), 1e-6)

    def test_scripted_conv_and_favor(self):
        conv = torch.jit.script(spe_torch.ConvSPE(2, 3, kernel_size=3))
        phi = torch.jit.script(spe_torch.FeatureMap("favor", 3))
        qbar, _ = conv([5])
        self.assertEqual(qbar.shape, (5, 2, 3, 256))
        self.assertEqual(phi(torch.randn(4, 3), "query").shape, (4, 3))


def write_checkpoint(path, meta, tensors, version=2):
    """The layout of src/train/checkpoint.cpp and tensor_file.h, written from its description."""
    header = json.dumps({"meta": meta, "tensors": [{"name": n, "dtype": str(t.dtype)[6:], "shape": list(t.shape)}
                                                    for n, t in tensors.items()]}).encode()
    data = b"".join(t.contiguous().numpy().tobytes() for t in tensors.values())
    payload = struct.pack("<Q", len(header)) + header + data
    with open(path, "wb") as f:
        checksum = spe_torch.checkpoint.fnv1a(payload)
        f.write(b"SPECKPT\0" + struct.pack("<IQQ", version, len(payload), checksum) + payload)


class CheckpointTest(unittest.TestCase):
    def test_reads_tensors_by_name_and_refuses_damage(self):
        tensors = {"config": torch.tensor(list(b"model: {}\n"), dtype=torch.uint8),
                   "model/sine_spe.freqs": torch.randn(2, 3, 4), "model/step": torch.tensor([7])}
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "c.pt")
            write_checkpoint(path, {"state": {"step": 7}}, tensors)
            ckpt = spe_torch.read_checkpoint(path)
            self.assertEqual((ckpt.config, ckpt.meta["state"]["step"]), ("model: {}\n", 7))
            freqs = spe_torch.state_dict_under(ckpt, "sine_spe.")["freqs"]
            self.assertTrue(torch.equal(freqs, tensors["model/sine_spe.freqs"]))
            with open(path, "rb") as f:
                data = bytearray(f.read())
            data[-3] ^= 1
            for damaged, message in ((data, "checksum does not match"), (data[:-1], "payload should be")):
                with open(path, "wb") as f:
                    f.write(damaged)
                self.assertRaisesRegex(ValueError, message, spe_torch.read_checkpoint, path)
            self.assertRaisesRegex(ValueError, "not an spe checkpoint", spe_torch.read_checkpoint, __file__)


@unittest.skipUnless(SPE_CLI, "SPE_CLI (the spe executable) not set")
class AgainstCpp(unittest.TestCase):
    def run_cli(self, *args):
        out = subprocess.run([SPE_CLI, "--threads", "1", *args], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)

    def kernel_report(self, tmp, *args):
        path = os.path.join(tmp, "kernel.json")
        self.run_cli("kernel", "--heads", "2", "--dim", "3", "--length", "5", "--realizations", "8", "--gated",
                     "--seed", "31", "--json", path, *args)
        with open(path) as f:
            return json.load(f)

    def test_same_seed_same_parameters_and_kernel(self):
        with tempfile.TemporaryDirectory() as tmp:
            for pe in ("sine", "conv"):
                report = self.kernel_report(tmp, "--pe", pe, "--sines" if pe == "sine" else "--kernel-size", "2")
                torch.manual_seed(31)                 # spe kernel: at::manual_seed(seed), the SPE, then the filter
                spe = spe_torch.SineSPE(2, 3, sines=2, realizations=8) if pe == "sine" else \
                    spe_torch.ConvSPE(2, 3, kernel_size=2, realizations=8)
                gated = spe_torch.SPEFilter(2, 3)
                params = dict(spe.named_parameters(), gate=gated.gate)
                self.assertEqual(set(params), set(report["params"]))
                for name, value in params.items():
                    cpp = torch.tensor(report["params"][name], dtype=F64)
                    self.assertTrue(torch.equal(value.data.double(), cpp), name)
                spe.double(), gated.double()
                shape = 5 if pe == "sine" else [5]
                expected = gated.expected_kernel(spe.expected_kernel(shape), 8)
                self.assertLess(max_error(expected, torch.tensor(report["expected"], dtype=F64)), 1e-12, pe)

    def tiny_checkpoint(self, *settings):
        """The checkpoint of one step of `spe train` on a tiny order probe, with these --set settings."""
        with tempfile.TemporaryDirectory() as tmp:
            data, run = os.path.join(tmp, "data"), os.path.join(tmp, "run")
            self.run_cli("data", "probe", "--kind", "order", "--out", data, "--length", "16", "--train", "8",
                         "--valid", "4", "--test", "4")
            config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "probe", "order.yaml")
            self.run_cli("train", "--config", config, "--out", run, "--no-progress", "--set", f"data.dir={data}",
                         "data.max_length=16", "model.layers=1", "model.ffn_dim=8", "train.steps=1",
                         "train.batch_size=4", "train.eval_every=1", "train.eval_batches=1", *settings)
            return spe_torch.read_checkpoint(os.path.join(run, "checkpoint.pt"))

    def test_modules_load_a_cpp_checkpoint(self):
        ckpt = self.tiny_checkpoint("model.dim=8", "model.heads=2", "model.positional.kind=sine_spe",
                                    "model.positional.code=sampled", "model.positional.place=inputs",
                                    "model.positional.realizations=4", "model.positional.sines=2",
                                    "model.attention.kind=favor", "model.attention.features=6")
        modules = {"transformer.sine_spe.": spe_torch.SineSPE(2, 4, sines=2, realizations=4),
                   "transformer.blocks.0.attention.spe_filter.": spe_torch.SPEFilter(2, 4),
                   "transformer.blocks.0.attention.feature_map.": spe_torch.FeatureMap("favor", 4, features=6)}
        for prefix, module in modules.items():
            module.load_state_dict(spe_torch.state_dict_under(ckpt, prefix))    # strict: the names match
            self.assertTrue(torch.equal(next(iter(module.state_dict().values())),
                                        ckpt.tensors["model/" + prefix + next(iter(module.state_dict()))]))
        self.assertIn("sine_spe", ckpt.config)

    def test_decay_starts_as_in_cpp(self):
        """Fixed decays are a buffer that training leaves as C++ started it: 8 heads, 1 - 2^-(5..12)."""
        ckpt = self.tiny_checkpoint("model.dim=16", "model.heads=8", "model.positional.kind=decay")
        decay = spe_torch.Decay(8)
        decay.load_state_dict(spe_torch.state_dict_under(ckpt, "transformer.blocks.0.attention.decay."))
        self.assertTrue(torch.equal(decay.logits, spe_torch.Decay(8).logits))


if __name__ == "__main__":
    unittest.main()
