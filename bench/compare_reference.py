#!/usr/bin/python3
"""Side-by-side measurement of spe's fused ops against the public reference implementations,
run from Debian's Python (python3-torch). Nothing of the references is copied here: they are
imported or compiled from the paths given on the command line (see docs/BENCHMARKS.md).

  sine:   one training step of sineSPE + gated filter on q and k (draw the code, filter, backward)
          ours: torch.ops.spe.sine_spe_filter; reference: aliutkus/spe src/pytorch (SineSPE, SPEFilter)
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


def median_time(step, repeats):
    step()  # warm-up
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


def causal_reference(torch, a):
    from torch.utils.cpp_extension import load
    os.environ.setdefault("MAX_JOBS", "1")
    ext = load(name="ft_causal_product_cpu", sources=[a.fast_transformers],
               extra_cflags=["-O3", "-fopenmp", "-ffast-math"], extra_ldflags=["-fopenmp"],
               build_directory=a.build_dir, verbose=False)
    B, N, H, M = a.batch, a.length, a.heads, a.dim
    q, k, v, g = (torch.rand(B, H, N, M), torch.rand(B, H, N, M), torch.randn(B, H, N, M), torch.randn(B, H, N, M))

    def step():
        out = torch.zeros(B, H, N, M)
        ext.causal_dot_product(q, k, v, out)
        gq, gk, gv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        ext.causal_dot_backward(q, k, v, g, gq, gk, gv)

    return step


IMPLEMENTATIONS = {
    ("sine", "ours"): sine_ours, ("sine", "reference"): sine_reference,
    ("causal", "ours"): causal_ours, ("causal", "reference"): causal_reference,
}


def run_one(a):
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    step = IMPLEMENTATIONS[(a.scenario, a.impl)](torch, a)
    baseline = rss_mib()
    seconds, times = median_time(step, a.repeats)
    print(json.dumps({
        "scenario": a.scenario, "impl": a.impl, "median_s": seconds, "times_s": times,
        "peak_rss_increase_mib": rss_mib() - baseline, "gemm_gflops": gemm_gflops(torch),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "env": {key: value for key, value in os.environ.items() if key.startswith("OPENBLAS_") or key == "OMP_NUM_THREADS"},
        "B": a.batch, "N": a.length, "H": a.heads, "D": a.dim,
        **({"R": a.realizations, "K": a.sines} if a.scenario == "sine" else {"chunk": a.chunk}),
    }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", required=True, help="path of libspe_torch_ops.so")
    p.add_argument("--spe-reference", help="folder holding the reference `spe` package (aliutkus/spe src/pytorch)")
    p.add_argument("--fast-transformers", help="path of fast-transformers' causal_product_cpu.cpp")
    p.add_argument("--build-dir", default="/tmp/spe_ft_build", help="where the fast-transformers extension is built")
    p.add_argument("--scenario", choices=["sine", "causal"], action="append", help="default: both")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--realizations", type=int, default=64)
    p.add_argument("--sines", type=int, default=5)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", choices=["ours", "reference"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.impl:
        a.scenario = a.scenario[0]
        return run_one(a)
    os.makedirs(a.build_dir, exist_ok=True)
    for scenario in a.scenario or ["sine", "causal"]:
        needed = a.spe_reference if scenario == "sine" else a.fast_transformers
        if not needed:
            sys.exit(f"--{'spe-reference' if scenario == 'sine' else 'fast-transformers'} is needed for {scenario}")
        results = {}
        for impl in ("ours", "reference"):
            args = [sys.executable, __file__, "--impl", impl, "--scenario", scenario] + [
                arg for arg in sys.argv[1:] if not arg.startswith("--scenario") and arg not in ("sine", "causal")]
            line = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            print(line, flush=True)
            results[impl] = json.loads(line)
        ours, ref = results["ours"], results["reference"]
        print(json.dumps({"scenario": scenario, "speedup": ref["median_s"] / ours["median_s"],
                          "memory_ratio": ref["peak_rss_increase_mib"] / max(ours["peak_rss_increase_mib"], 1e-9)}))


if __name__ == "__main__":
    main()
