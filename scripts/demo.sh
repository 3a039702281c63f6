#!/usr/bin/env bash
# The main job until a training demo exists: the positional kernels that sineSPE and convSPE
# layers induce, exact against sampled, as JSON and PNG under the output folder.
set -euo pipefail
spe=${1:-build/spe}
out=${2:-out}
mkdir -p "$out"
"$spe" info --gemm-size 512
"$spe" kernel --pe sine --heads 2 --dim 8 --length 256 --realizations 64 --sines 5 --gated --seed 7 \
  --json "$out/kernel_sine.json" --png "$out/kernel_sine.png"
"$spe" kernel --pe conv --heads 2 --dim 8 --length 256 --realizations 64 --kernel-size 32 --seed 7 \
  --json "$out/kernel_conv.json" --png "$out/kernel_conv.png"
echo "demo: the plots are $out/kernel_sine.png and $out/kernel_conv.png"
