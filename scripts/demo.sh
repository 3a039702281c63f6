#!/usr/bin/env bash
# The main job, a few minutes on two cores: generate a small ListOps, train linear attention
# without and with gated sineSPE on it (`spe compare`: a table of test accuracies and the
# validation curves), then plot the positional kernels that sineSPE and convSPE layers induce.
set -euo pipefail
spe=${1:-build/spe}
out=${2:-out}
mkdir -p "$out"
"$spe" info --gemm-size 512

# ListOps with 100-400 tokens per expression (the full task is 500-2000; see README).
"$spe" data listops --out "$out/listops" --train 2000 --valid 200 --test 200 \
  --min-length 100 --max-length 400 --max-depth 6 --seed 1
rm -rf "$out/compare"
"$spe" compare --task listops --pe none,sine_spe --attention linear --seeds 1 --out "$out/compare" \
  --set data.dir="$out/listops" train.steps=300 train.eval_every=100 train.checkpoint_every=100 \
        train.warmup_steps=30 train.lr=0.002

"$spe" kernel --pe sine --heads 2 --dim 8 --length 256 --realizations 64 --sines 5 --gated --seed 7 \
  --json "$out/kernel_sine.json" --png "$out/kernel_sine.png"
"$spe" kernel --pe conv --heads 2 --dim 8 --length 256 --realizations 64 --kernel-size 32 --seed 7 \
  --json "$out/kernel_conv.json" --png "$out/kernel_conv.png"
echo "demo: $out/compare/results.md (table), $out/compare/curves.png (validation curves)," \
     "$out/kernel_sine.png and $out/kernel_conv.png (kernels)"
