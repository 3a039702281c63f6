#!/usr/bin/env bash
# Length extrapolation of the music language model, every positional kind, several seeds:
# trains configs/music/lm.yaml once per kind and seed (`spe compare`, resumable: finished runs are
# skipped, interrupted ones resume from their checkpoint), then evaluates every best checkpoint on
# test windows of 2L and 4L tokens (`spe extrapolate`) and writes the table of docs/RESULTS.md.
#   scripts/music_extrapolation.sh SEEDS OUT [STEPS]
# Seeds are trained in passes (seed 1 of every kind first), so a stopped grid has whole seeds.
# Groups: sampled (the config's gated R 32 SPE), exact (sineSPE's exact code), toeplitz, and gate3
# (sampled SPE with its gate started mostly positional, gate_mean -3).
set -euo pipefail
seeds=${1:?seeds}; out=${2:?output folder}; steps=${3:-500}
spe=${SPE:-build/spe}
[ -f data/music/train.bin ] || "$spe" data midi --out data/music
common=(--task music --config configs/music/lm.yaml --attention linear
        --set data.dir=data/music "train.steps=$steps" train.eval_every=100 train.checkpoint_every=100
        train.log_every=50 model.positional.place=features)
for s in $(seq 1 "$seeds"); do
  "$spe" --threads 1 compare "${common[@]}" --seeds "$s" --out "$out/sampled" \
    --pe none,sinusoidal,rotary,sine_spe,conv_spe,decay
  "$spe" --threads 1 compare "${common[@]}" --seeds "$s" --out "$out/exact" --pe sine_spe \
    --set model.positional.code=exact
  "$spe" --threads 1 compare "${common[@]}" --seeds "$s" --out "$out/toeplitz" --pe toeplitz
  "$spe" --threads 1 compare "${common[@]}" --seeds "$s" --out "$out/gate3" --pe sine_spe,conv_spe \
    --set model.positional.gate_mean=-3
done
for length in 512 1024; do
  for s in $(seq 1 "$seeds"); do
    checkpoints=()
    for run in "$out"/*/linear-*-seed"$s"; do
      checkpoints+=(--checkpoint "$run/best.pt")
    done
    "$spe" --threads 1 extrapolate "${checkpoints[@]}" --length "$length" --bins $((length / 128)) \
      --json "$out/extrapolate_L${length}_seed$s.jsonl"
  done
done
python3 scripts/extrapolation_table.py "$out"
