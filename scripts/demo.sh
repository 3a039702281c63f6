#!/usr/bin/env bash
# The main job, a few minutes on two cores: generate a small ListOps, train linear attention
# without and with gated sineSPE on it (`spe compare`: a table of test accuracies and the
# validation curves), plot the positional kernels that sineSPE and convSPE layers induce, then
# the music path: MIDI corpus -> REMI tokens -> a small sineSPE language model -> a generated
# MIDI file and its piano roll -> the loss by position on test songs 4x the training length.
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

# Music: Debian's MIDI files plus 10 MMA songs, windows of 256 tokens; a small model for 2 minutes.
"$spe" data midi --out "$out/music" --mma-songs 10 --window 256
rm -rf "$out/music_run"
"$spe" train --config configs/music/lm.yaml --out "$out/music_run" --budget 2 --no-progress \
  --set data.dir="$out/music" model.dim=64 model.layers=2 model.ffn_dim=128 train.steps=400 \
        train.eval_every=100 train.checkpoint_every=100 train.log_every=50
"$spe" generate --checkpoint "$out/music_run/best.pt" --tokens 1024 --temperature 0.9 --top-p 0.95 --seed 1 \
  --out "$out/generated.mid" --png "$out/piano_roll.png"
"$spe" extrapolate --checkpoint "$out/music_run/best.pt" --length 1024 --bins 16 --png "$out/extrapolation.png"
echo "demo: $out/compare/results.md (table), $out/compare/curves.png (validation curves)," \
     "$out/kernel_sine.png and $out/kernel_conv.png (kernels), $out/generated.mid and $out/piano_roll.png" \
     "(generated music), $out/extrapolation.png (loss by position beyond the training length)"
