#!/usr/bin/env bash
# Data-parallel scaling on this machine: one configuration and global batch (ListOps, linear
# attention with gated sineSPE, batch 16) trained by 1 process with 1 thread, 1 process with 2
# threads, and 2 processes (`spe train --nproc 2`) with 1 thread each. Prints a markdown table
# of medians over the logged windows (the first, warming up, left out).
#   bench/data_parallel.sh [SPE] [OUT] [STEPS]      defaults: build/spe runs/bench_dp 80
set -euo pipefail
cd "$(dirname "$0")/.."
spe=${1:-build/spe} out=${2:-runs/bench_dp} steps=${3:-80}
rm -rf "$out"
mkdir -p "$out"
"$spe" data listops --out "$out/data" --train 4000 --valid 64 --test 64 --seed 1 > /dev/null
common=(train --config configs/listops/linear_sine_spe.yaml --no-progress
        --set "data.dir=$out/data" "train.steps=$steps" train.log_every=10 train.eval_every=100000
        train.checkpoint_every=100000 model.dropout=0)
OMP_NUM_THREADS=1 "$spe" --threads 1 "${common[@]}" --out "$out/1x1" 2> "$out/1x1.log"
OMP_NUM_THREADS=2 "$spe" --threads 2 "${common[@]}" --out "$out/1x2" 2> "$out/1x2.log"
"$spe" --threads 2 "${common[@]}" --nproc 2 --out "$out/2x1" 2> "$out/2x1.log"
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
print("| processes x threads | steps/s | training tokens/s | vs 1 x 1 | waiting for the other rank |")
print("|---|---|---|---|---|")
base = None
for run in ["1x1", "1x2", "2x1"]:
    lines = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    train = [l for l in lines if l["split"] == "train"][1:]
    steps = statistics.median(l["steps_per_s"] for l in train)
    tokens = statistics.median(l["tokens_per_s"] for l in train)
    sync = statistics.median(l.get("sync_share", 0.0) for l in train)
    base = base or tokens
    waiting = f"{100 * sync:.1f}% of step time" if run == "2x1" else "-"
    print(f"| {run.replace('x', ' x ')} | {steps:.2f} | {tokens:,.0f} | {tokens / base:.2f}x | {waiting} |")
PY
