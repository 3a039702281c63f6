#!/usr/bin/env python3
"""One seed of a grid made by scripts/lra_grids.sh, as docs/RESULTS.md tabulates it: per positional
kind the test accuracy (of the best-validation checkpoint), the best validation accuracy, the
validation accuracy at every evaluation, the training loss over the last 10 % of the steps and the
run's minutes; then each kind's test accuracy over every finished seed, mean +- sample sd.

    scripts/lra_seed_table.py runs/lra/image/linear 2

Reads RUN/linear-KIND-seedS/{summary.json,metrics.jsonl}; a kind not finished is named as such.
"""
import json
import os
import statistics
import sys

KINDS = ["none", "sinusoidal", "rotary", "sine_spe", "conv_spe", "decay", "shaw"]


def read_run(folder):
    summary = json.load(open(os.path.join(folder, "summary.json")))
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    valid = {r["step"]: r["accuracy"] for r in rows if r.get("split") == "valid"}  # a resumed run repeats steps
    last = summary["steps"] - summary["steps"] // 10
    losses = [r["loss"] for r in rows if r.get("split") == "train" and r["step"] > last]
    return summary, valid, losses


def main(root, seed):
    prefix = os.path.basename(os.path.normpath(root))  # linear or softmax
    print("| positional | test | best validation | validation at each evaluation | training loss, last 10 % | minutes |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        folder = os.path.join(root, f"{prefix}-{kind}-seed{seed}")
        if not os.path.isdir(folder):
            continue
        if not os.path.exists(os.path.join(folder, "summary.json")):
            print(f"| {kind} | not finished | | | | |")
            continue
        summary, valid, losses = read_run(folder)
        curve = " ".join(f"{valid[step]:.3f}" for step in sorted(valid))
        loss = f"{min(losses):.2f}-{max(losses):.2f}" if losses else ""
        print(f"| {kind} | {summary['test_accuracy']:.3f} | {max(valid.values()):.3f} | {curve} | {loss} | "
              f"{summary['seconds'] / 60:.1f} |")
    print()
    for kind in KINDS:
        scores = []
        for s in range(1, 10):
            path = os.path.join(root, f"{prefix}-{kind}-seed{s}", "summary.json")
            if os.path.exists(path):
                scores.append(json.load(open(path))["test_accuracy"])
        if scores:
            sd = statistics.stdev(scores) if len(scores) > 1 else float("nan")
            print(f"{kind}: {' '.join(f'{x:.3f}' for x in scores)}  mean {statistics.mean(scores):.3f} +- {sd:.3f} "
                  f"({len(scores)} seeds)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: lra_seed_table.py RUN_FOLDER SEED   (e.g. runs/lra/image/linear 2)")
    main(sys.argv[1], int(sys.argv[2]))
