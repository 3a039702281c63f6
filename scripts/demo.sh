#!/usr/bin/env bash
# The main job, a few minutes on two cores: generate ListOps, train a small linear-attention
# classifier with gated sineSPE on it, evaluate it on the test split and plot its learning
# curves; then plot the positional kernels that sineSPE and convSPE layers induce.
set -euo pipefail
spe=${1:-build/spe}
out=${2:-out}
mkdir -p "$out"
"$spe" info --gemm-size 512

# ListOps: 2000 training expressions of 100-400 tokens (the full task is 500-2000, see README).
"$spe" data listops --out "$out/listops" --train 2000 --valid 200 --test 200 \
  --min-length 100 --max-length 400 --max-depth 6 --seed 1
rm -rf "$out/listops_run"
"$spe" train --config configs/listops/linear_sine_spe.yaml --out "$out/listops_run" \
  --set data.dir="$out/listops" train.steps=300 train.eval_every=100 train.checkpoint_every=100 \
        train.warmup_steps=30 train.lr=0.002
"$spe" eval --checkpoint "$out/listops_run/best.pt" --split test
"$spe" plot --metrics "$out/listops_run/metrics.jsonl" --png "$out/listops_curves.png" \
  --title "ListOps, linear attention + gated sineSPE"

"$spe" kernel --pe sine --heads 2 --dim 8 --length 256 --realizations 64 --sines 5 --gated --seed 7 \
  --json "$out/kernel_sine.json" --png "$out/kernel_sine.png"
"$spe" kernel --pe conv --heads 2 --dim 8 --length 256 --realizations 64 --kernel-size 32 --seed 7 \
  --json "$out/kernel_conv.json" --png "$out/kernel_conv.png"
echo "demo: learning curves in $out/listops_curves.png, kernels in $out/kernel_sine.png and $out/kernel_conv.png"
