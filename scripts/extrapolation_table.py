#!/usr/bin/env python3
"""The music extrapolation table of docs/RESULTS.md from scripts/music_extrapolation.sh's output:
for each evaluated length, the next-token loss (nats) by bin of positions, within and beyond the
training length, mean +- sample sd over the seeds of each positional kind.
Usage: python3 scripts/extrapolation_table.py OUT"""
import collections
import glob
import json
import os
import re
import statistics
import sys


def label(checkpoint):
    """'sine_spe (exact)' for OUT/exact/linear-sine_spe-seed1/best.pt, 'conv_spe (gate_mean -3)' for
    OUT/gate3/..., 'rotary' for OUT/sampled/..."""
    run = os.path.basename(os.path.dirname(checkpoint))
    group = os.path.basename(os.path.dirname(os.path.dirname(checkpoint)))
    kind = re.sub(r"^[a-z]+-(.*)-seed\d+$", r"\1", run)
    return {"exact": f"{kind} (exact)", "gate3": f"{kind} (gate_mean -3)"}.get(group, kind)


def cell(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(out):
    by_length = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in sorted(glob.glob(os.path.join(out, "extrapolate_L*_seed*.jsonl"))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                by_length[row["length"]][label(row["checkpoint"])].append(row)
    if not by_length:
        sys.exit(f"no extrapolate_L*_seed*.jsonl in {out}: run scripts/music_extrapolation.sh first")
    for length in sorted(by_length):
        runs = by_length[length]
        first = next(iter(runs.values()))[0]
        bins = len(first["nll_bins"])
        width = length // bins
        names = [f"{i * width}-{(i + 1) * width - 1}" for i in range(bins)]
        print(f"\nWindows of {length} tokens (trained on {first['trained_length']}; {first['windows']} windows), "
              "mean NLL in nats per token:\n")
        print("| positional | seeds | " + " | ".join(names) + " | within L | beyond L |")
        print("|---" * (bins + 4) + "|")
        for name in sorted(runs, key=lambda n: statistics.mean(r["nll_beyond_trained_length"] for r in runs[n])):
            rows = runs[name]
            cells = [cell([r["nll_bins"][i] for r in rows]) for i in range(bins)]
            cells += [cell([r["nll_within_trained_length"] for r in rows]),
                      cell([r["nll_beyond_trained_length"] for r in rows])]
            print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
