#!/usr/bin/python3
"""Side-by-side measurement of spe's fused ops against the public reference implementations,
run from Debian's Python (python3-torch). Nothing of the references is copied here: they are
imported or compiled from the paths given on the command line (see docs/BENCHMARKS.md).

  sine:   one training step of sineSPE + gated filter on q and k (draw the code, filter, backward)
          ours: torch.ops.spe.sine_spe_filter; reference: aliutkus/spe src/pytorch (SineSPE, SPEFilter)
  lm:     training steps of a whole decoder language model, the authors' music model shape (causal
          linear attention, gated sineSPE with one code shared by the layers; width, layers, length
          from the options), written once in torch.nn here; ours: spe_torch's SineSPE, SPEFilter and
          causal_linear_attention (and, with --spe, the same model in spe's C++ trainer code:
          `spe bench train`); reference: the authors' SineSPE and SPEFilter and fast-transformers'
          causal product with its normaliser
  encoder: the same blocks, non-causal, a classifier of the mean over positions; reference:
          fast-transformers' linear attention (its PyTorch operations, written here as einsums)
  causal: causal linear attention forward + backward
          ours: torch.ops.spe.causal_linear_attention (normalised);
          reference: fast-transformers' CPU causal_product (unnormalised), built with -O3 -fopenmp -ffast-math

Every step is forward + backward given fixed upstream gradients (torch.autograd.backward), with
the inputs' and parameters' gradients set to None first, as optimizer.zero_grad(set_to_none=True)
does: both sides then do their op's work and nothing else (no loss tensors, no accumulation
into old gradients). Each implementation runs in a fresh subprocess, so that its peak resident
memory is its own.
Prints one JSON line per implementation and one per comparison.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_time(step, repeats, warmups=1):
    for _ in range(warmups):  # first steps pay for allocation, page faults, thread start-up
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def gemm_gflops(torch, n=2048, repeats=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds, _ = median_time(lambda: torch.mm(a, b), repeats)
    return 2 * n ** 3 / seconds / 1e9


def sine_ours(torch, a):
    torch.ops.load_library(a.ops)
    B, N, H, D, R, K = a.batch, a.length, a.heads, a.dim, a.realizations, a.sines
    freqs = (torch.randn(H, D, K) - 4).requires_grad_()
    offsets = torch.randn(H, D, K).requires_grad_()
    gains = torch.randn(H, D, K).requires_grad_()
    gate = torch.randn(H, D).requires_grad_()
    q = torch.randn(B, N, H, D, requires_grad=True)
    k = torch.randn(B, N, H, D, requires_grad=True)
    wq, wk = torch.randn(B, N, H, R), torch.randn(B, N, H, R)

    leaves = [freqs, offsets, gains, gate, q, k]

    def step():
        for leaf in leaves:
            leaf.grad = None
        z = torch.randn(H, D, 2 * K, R)
        lam = torch.nn.functional.softplus(gains).repeat_interleave(2, -1)
        w = z * lam[..., None] / math.sqrt(2 * K) / (R * D) ** 0.25
        f = torch.sigmoid(freqs.double()) / 2
        s = torch.sigmoid(gate)
        scale = torch.sqrt(1 - s)
        shift = torch.sqrt(s)[..., None] * torch.randn(H, D, R) / (D * R) ** 0.25
        qhat = torch.ops.spe.sine_spe_filter(q, f, offsets.double(), w, scale, shift, 0)
        khat = torch.ops.spe.sine_spe_filter(k, f, torch.zeros(H, D, K, dtype=torch.float64), w, scale, shift, 0)
        torch.autograd.backward([qhat, khat], [wq, wk])

    return step


def sine_reference(torch, a):
    sys.path.insert(0, a.spe_reference)
    from spe import SineSPE, SPEFilter
    B, N, H, D, R, K = a.batch, a.length, a.heads, a.dim, a.realizations, a.sines
    spe = SineSPE(num_heads=H, in_features=D, num_realizations=R, num_sines=K)
    filt = SPEFilter(gated=True, code_shape=spe.code_shape)
    q = torch.randn(B, N, H, D, requires_grad=True)
    k = torch.randn(B, N, H, D, requires_grad=True)
    wq, wk = torch.randn(B, N, H, R), torch.randn(B, N, H, R)

    def step():
        spe.zero_grad(set_to_none=True)
        filt.zero_grad(set_to_none=True)
        q.grad = k.grad = None
        qhat, khat = filt(q, k, spe((B, N)))
        torch.autograd.backward([qhat, khat], [wq, wk])

    return step


def causal_ours(torch, a):
    torch.ops.load_library(a.ops)
    B, N, H, M = a.batch, a.length, a.heads, a.dim
    q = torch.rand(B, N, H, M, requires_grad=True)
    k = torch.rand(B, N, H, M, requires_grad=True)
    v = torch.randn(B, N, H, M, requires_grad=True)
    g = torch.randn(B, N, H, M)

    def step():
        q.grad = k.grad = v.grad = None
        torch.ops.spe.causal_linear_attention(q, k, v, 1e-6, a.chunk).backward(g)

    return step


def fast_transformers_extension(a):
    """fast-transformers' CPU causal product, compiled from the file given (-O3 -fopenmp -ffast-math)."""
    from torch.utils.cpp_extension import load
    os.environ.setdefault("MAX_JOBS", "1")
    return load(name="ft_causal_product_cpu", sources=[a.fast_transformers],
                extra_cflags=["-O3", "-fopenmp", "-ffast-math"], extra_ldflags=["-fopenmp"],
                build_directory=a.build_dir, verbose=False)


def causal_reference(torch, a):
    ext = fast_transformers_extension(a)
    B, N, H, M = a.batch, a.length, a.heads, a.dim
    q, k, v, g = (torch.rand(B, H, N, M), torch.rand(B, H, N, M), torch.randn(B, H, N, M), torch.randn(B, H, N, M))

    def step():
        out = torch.zeros(B, H, N, M)
        ext.causal_dot_product(q, k, v, out)
        gq, gk, gv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        ext.causal_dot_backward(q, k, v, g, gq, gk, gv)

    return step


def transformer(torch, a, positional, attend, classes=None):
    """The authors' music model shape in plain torch.nn, the same on both sides: a token embedding,
    a.layers pre-norm blocks (q, k, v projections; SPE on q and k, one code per forward shared by
    the layers and a gated filter per layer; linear attention with elu + 1 features on the R
    filtered dimensions; the output projection; a feed-forward of a.ffn), a final norm, and the
    next-token head, or with `classes` a classifier of the mean over positions.
    positional: (draw(B, N) -> code, make_filter() -> module(q, k, code) -> qhat, khat);
    attend(phi_q, phi_k, v) -> (B, N, H, D), all (B, N, H, .)."""
    nn, F = torch.nn, torch.nn.functional
    E, H = a.model_dim, a.heads

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(E), nn.LayerNorm(E)
            self.qkv, self.out = nn.Linear(E, 3 * E), nn.Linear(E, E)
            self.filter = positional.make_filter()
            self.ffn = nn.Sequential(nn.Linear(E, a.ffn), nn.GELU(), nn.Linear(a.ffn, E))

        def forward(self, x, code):
            B, N, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, H, E // H).unbind(2)
            qhat, khat = self.filter(q, k, code)
            x = x + self.out(attend(F.elu(qhat) + 1, F.elu(khat) + 1, v).reshape(B, N, E))
            return x + self.ffn(self.norm2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.blocks = nn.Embedding(a.vocab, E), nn.ModuleList(Block() for _ in range(a.layers))
            self.norm, self.head = nn.LayerNorm(E), nn.Linear(E, classes or a.vocab)
            self.positional = positional

        def forward(self, tokens):
            x, code = self.embed(tokens), positional.draw(*tokens.shape)
            for block in self.blocks:
                x = block(x, code)
            x = self.norm(x)
            return self.head(x.mean(1) if classes else x)

    return Model()


def train_steps(torch, a, positional, attend, classes=None):
    """One training step of `transformer` on fixed random tokens (AdamW, as spe's trainer): the
    next-token loss of a language model, or a classifier's on random labels."""
    model = transformer(torch, a, positional, attend, classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(1, a.vocab, (a.batch, a.length + (0 if classes else 1)))
    inputs, targets = (tokens, torch.randint(0, classes, (a.batch,))) if classes else (tokens[:, :-1], tokens[:, 1:])

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten()).backward()
        optimizer.step()

    return step


def ours_positional(torch, a):
    """spe_torch's SineSPE (one code per forward) and a gated SPEFilter per layer."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import spe_torch
    spe_torch.load_library(a.ops)
    H, D = a.heads, a.model_dim // a.heads
    spe = spe_torch.SineSPE(H, D, sines=a.sines, realizations=a.realizations)

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.spe = spe

        def draw(self, B, N):
            return self.spe.draw()

        def make_filter(self):
            return spe_torch.SPEFilter(H, D, gated=True)

    return spe_torch, Positional()


def reference_positional(torch, a):
    """The authors' SineSPE (one code per forward) and a gated SPEFilter per layer."""
    sys.path.insert(0, a.spe_reference)
    from spe import SineSPE, SPEFilter
    H, D = a.heads, a.model_dim // a.heads
    spe = SineSPE(num_heads=H, in_features=D, num_realizations=a.realizations, num_sines=a.sines)

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.spe = spe

        def draw(self, B, N):
            return self.spe((B, N))

        def make_filter(self):
            return SPEFilter(gated=True, code_shape=spe.code_shape)

    return Positional()


def lm_ours(torch, a):
    spe_torch, positional = ours_positional(torch, a)
    return train_steps(torch, a, positional, lambda q, k, v: spe_torch.causal_linear_attention(q, k, v))


def lm_reference(torch, a):
    ext = fast_transformers_extension(a)

    class CausalProduct(torch.autograd.Function):  # the extension's own forward and backward, on (B, H, N, .)
        @staticmethod
        def forward(ctx, q, k, v):
            ctx.save_for_backward(q, k, v)
            out = q.new_zeros(q.shape[:3] + v.shape[3:])
            ext.causal_dot_product(q, k, v, out)
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v = ctx.saved_tensors
            gq, gk, gv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
            ext.causal_dot_backward(q, k, v, grad_out.contiguous(), gq, gk, gv)
            return gq, gk, gv

    def attend(phi_q, phi_k, v):  # fast-transformers' causal linear attention: numerator / (q . cumsum k)
        q, k, v = (x.transpose(1, 2).contiguous() for x in (phi_q, phi_k, v))
        den = torch.einsum("bhnm,bhnm->bhn", q, k.cumsum(2)) + 1e-6
        return (CausalProduct.apply(q, k, v) / den[..., None]).transpose(1, 2)

    return train_steps(torch, a, reference_positional(torch, a), attend)


def encoder_ours(torch, a):
    spe_torch, positional = ours_positional(torch, a)
    return train_steps(torch, a, positional, lambda q, k, v: spe_torch.linear_attention(q, k, v), a.classes)


def encoder_reference(torch, a):
    def attend(phi_q, phi_k, v):  # fast-transformers' (non-causal) linear attention, in PyTorch operations
        kv = torch.einsum("bnhm,bnhd->bhmd", phi_k, v)
        den = torch.einsum("bnhm,bhm->bnh", phi_q, phi_k.sum(1)) + 1e-6
        return torch.einsum("bnhm,bhmd->bnhd", phi_q, kv) / den[..., None]

    return train_steps(torch, a, reference_positional(torch, a), attend, a.classes)


IMPLEMENTATIONS = {
    ("sine", "ours"): sine_ours, ("sine", "reference"): sine_reference,
    ("causal", "ours"): causal_ours, ("causal", "reference"): causal_reference,
    ("lm", "ours"): lm_ours, ("lm", "reference"): lm_reference,
    ("encoder", "ours"): encoder_ours, ("encoder", "reference"): encoder_reference,
}


def run_one(a):
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    step = IMPLEMENTATIONS[(a.scenario, a.impl)](torch, a)
    baseline = rss_mib()
    seconds, times = median_time(step, a.repeats, a.warmups)
    print(json.dumps({
        "scenario": a.scenario, "impl": a.impl, "median_s": seconds, "times_s": times,
        "peak_rss_increase_mib": rss_mib() - baseline, "gemm_gflops": gemm_gflops(torch),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "env": {key: value for key, value in os.environ.items() if key.startswith("OPENBLAS_") or key == "OMP_NUM_THREADS"},
        "B": a.batch, "N": a.length, "H": a.heads, **SHAPES[a.scenario](a), **throughput(a, a.scenario, seconds),
    }), flush=True)


SHAPES = {
    "sine": lambda a: {"D": a.dim, "R": a.realizations, "K": a.sines},
    "causal": lambda a: {"D": a.dim, "chunk": a.chunk},
    "lm": lambda a: {"E": a.model_dim, "layers": a.layers, "ffn": a.ffn, "vocab": a.vocab, "R": a.realizations,
                     "K": a.sines},
}
SHAPES["encoder"] = lambda a: {**SHAPES["lm"](a), "classes": a.classes}


def throughput(a, scenario, seconds):
    """Tokens per second of a whole model's step (lm, encoder); nothing for the kernels."""
    return {"tokens_per_s": a.batch * a.length / seconds} if scenario in ("lm", "encoder") else {}


def spe_cli(a, scenario):
    """The same model trained by spe's C++ model and trainer code (`spe bench train`): a language
    model (lm), or a classifier of the mean over positions (encoder). One JSON line like run_one's."""
    sets = [f"model.dim={a.model_dim}", f"model.heads={a.heads}", f"model.layers={a.layers}", f"model.ffn_dim={a.ffn}",
            "model.dropout=0", "model.attention.kind=linear", "model.attention.feature_map=elu",
            "model.positional.kind=sine_spe", f"model.positional.realizations={a.realizations}",
            f"model.positional.sines={a.sines}", "model.positional.gated=true", "model.positional.gate_mean=0",
            "model.positional.shared_code=true", "model.positional.code=sampled", "model.positional.place=inputs"]
    config = "music/lm.yaml" if scenario == "lm" else "text/compare.yaml"
    if scenario == "encoder":
        sets += ["model.pooling=mean"]
    out = subprocess.run([a.spe, "--threads", str(a.threads), "bench", "train", "--config",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", config),
                          "--set", *sets, "--batch", str(a.batch), "--length", str(a.length), "--vocab", str(a.vocab),
                          "--classes", str(a.classes), "--repeats", str(a.repeats)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"scenario": scenario, "impl": "spe_cli", "median_s": r["median_step_s"],
            "peak_rss_increase_mib": r["first_step_peak_mib"], "threads": r["threads"], "B": a.batch, "N": a.length,
            "H": a.heads, **SHAPES[scenario](a), **throughput(a, scenario, r["median_step_s"]),
            "parameters": r["parameters"], "model": r["model"], "causal": r["causal"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", required=True, help="path of libspe_torch_ops.so")
    p.add_argument("--spe-reference", help="folder holding the reference `spe` package (aliutkus/spe src/pytorch)")
    p.add_argument("--fast-transformers", help="path of fast-transformers' causal_product_cpu.cpp")
    p.add_argument("--build-dir", default="/tmp/spe_ft_build", help="where the fast-transformers extension is built")
    p.add_argument("--scenario", choices=["sine", "causal", "lm", "encoder"], action="append",
                   help="default: sine and causal")
    p.add_argument("--spe", help="lm, encoder: the spe binary, to train the same model with spe's C++ code too")
    p.add_argument("--model-dim", type=int, default=512, help="lm, encoder: model width E (D = E / heads)")
    p.add_argument("--layers", type=int, default=2, help="lm, encoder: blocks (the authors' music model has 24)")
    p.add_argument("--ffn", type=int, default=2048, help="lm, encoder: feed-forward width")
    p.add_argument("--vocab", type=int, default=512, help="lm, encoder: vocabulary")
    p.add_argument("--classes", type=int, default=10, help="encoder: classes")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--realizations", type=int, default=64)
    p.add_argument("--sines", type=int, default=5)
    p.add_argument("--chunk", type=int, default=32, help="causal kernel chunk (the library default, ops::kCausalChunk)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmups", type=int, default=3,
                   help="untimed steps first (one was too few: the spe side's next steps still ran twice as long)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=["ours", "reference"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.impl:
        a.scenario = a.scenario[0]
        return run_one(a)
    os.makedirs(a.build_dir, exist_ok=True)
    needs = {"sine": ["spe_reference"], "causal": ["fast_transformers"], "lm": ["spe_reference", "fast_transformers"],
             "encoder": ["spe_reference"]}
    for scenario in a.scenario or ["sine", "causal"]:
        for option in needs[scenario]:
            if not getattr(a, option):
                sys.exit(f"--{option.replace('_', '-')} is needed for {scenario}")
        results = {}
        for impl in ("ours", "reference"):
            args = [sys.executable, __file__, "--impl", impl, "--scenario", scenario] + [
                arg for arg in sys.argv[1:] if not arg.startswith("--scenario") and arg not in needs]
            line = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            print(line, flush=True)
            results[impl] = json.loads(line)
        if scenario in ("lm", "encoder") and a.spe:
            results["spe_cli"] = spe_cli(a, scenario)
            print(json.dumps(results["spe_cli"]), flush=True)
        ref = results["reference"]
        for impl in (name for name in results if name != "reference"):
            ours = results[impl]
            print(json.dumps({"scenario": scenario, "impl": impl, "speedup": ref["median_s"] / ours["median_s"],
                              "memory_ratio": ref["peak_rss_increase_mib"] / max(ours["peak_rss_increase_mib"], 1e-9)}))


if __name__ == "__main__":
    main()
