#!/usr/bin/env bash
# The paper's comparisons redone (docs/RESULTS.md, "Long-Range-Arena-style grids"): for each task,
# linear attention in the LRA setup of configs/TASK/compare.yaml (ReLU features, [CLS] token,
# lr 3e-3, positions on the features, sineSPE's exact code; retrieval: mean pooling and lr 1e-3,
# with which alone a model leaves chance there) with every positional kind, and softmax
# with Shaw and with rotary as quadratic references. Seeds run in passes (seed 1 of every cell of
# every task first), so a stopped grid has whole seeds; resumable: finished runs are skipped,
# interrupted ones resume from their checkpoint. One thread per run.
#   scripts/lra_grids.sh SEEDS OUT [TASKS]      TASKS default: "listops retrieval text image"
# Environment: SPE (the spe binary, default build/spe).
# Then each OUT/TASK/{linear,softmax}/results.md holds the grid's table (mean +- sd over seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:?seeds}; out=${2:?output folder}; tasks=${3:-listops retrieval text image}
spe=${SPE:-build/spe}

# Data, made once (data/ is not in git).
prepare() {
  case $1 in
    listops) [ -f data/listops/train.bin ] || "$spe" data listops --out data/listops --train 20000 --valid 500 \
               --test 1000 --min-length 100 --max-length 500 --max-depth 8 --seed 1 ;;
    image) [ -f data/image/train.bin ] || "$spe" data image --out data/image --train 20000 --valid 1000 --test 2000 ;;
    text) [ -f data/text/train.bin ] || "$spe" data text --out data/text ;;
    retrieval) [ -f data/retrieval/train.bin ] || "$spe" data retrieval --out data/retrieval ;;
    *) echo "lra_grids: unknown task '$1' (listops, retrieval, text, image)" >&2; exit 2 ;;
  esac
}

# Steps per run (batch as in the task's config): long enough for the validation curves to flatten.
steps() {
  case $1 in
    listops) echo 3000 ;; image) echo 3000 ;; text) echo 2000 ;; retrieval) echo 2000 ;;
  esac
}

for task in $tasks; do prepare "$task"; done
for s in $(seq 1 "$seeds"); do
  for task in $tasks; do
    n=$(steps "$task")
    common=(--task "$task" --seeds "$s" --set "data.dir=data/$task" "train.steps=$n"
            "train.eval_every=$((n / 10))" "train.checkpoint_every=$((n / 10))" train.log_every=50)
    "$spe" --threads 1 compare "${common[@]}" --out "$out/$task/linear" --attention linear \
      --pe none,sinusoidal,rotary,sine_spe,conv_spe,decay
    "$spe" --threads 1 compare "${common[@]}" --out "$out/$task/softmax" --attention softmax --pe shaw,rotary
  done
done
