#!/usr/bin/env bash
# The paper's comparisons redone (docs/RESULTS.md, "Long-Range-Arena-style grids"): for each task,
# linear attention in the LRA setup of configs/TASK/compare.yaml (ReLU features, [CLS] token,
# lr 3e-3, positions on the features, sineSPE's exact code; retrieval: mean pooling and lr 1e-3,
# with which alone a model leaves chance there) with every positional kind, and softmax
# with Shaw and with rotary as quadratic references. Seeds run in passes (seed S of every linear
# cell of every task is started before seed S + 1), so a stopped grid has whole seeds; resumable: finished runs are
# skipped, interrupted ones resume from their checkpoint. One thread per run, JOBS runs at a time
# (each cell its own `spe compare` process, the slowest kinds started first).
#   scripts/lra_grids.sh SEEDS OUT [TASKS] [FIRST_SEED]   TASKS default: "listops retrieval text image"
# Environment: SPE (the spe binary, default build/spe), JOBS (runs at a time, default 1),
# LINEAR_KINDS (the linear cells, default all six; empty: none, to run the references alone),
# SOFTMAX_KINDS (the quadratic references, default "shaw rotary"; empty: none), SOFTMAX_TASKS (the
# tasks that get them, default all; e.g. "image": retrieval's and text's 2,048-token softmax runs
# take hours each). The references are queued after every linear cell.
# Then each OUT/TASK/{linear,softmax}/results.md holds the grid's table (mean +- sd over seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:?seeds}; out=${2:?output folder}; tasks=${3:-listops retrieval text image}; first=${4:-1}
spe=${SPE:-build/spe}; jobs=${JOBS:-1}
# slowest first, for the runs at a time
read -r -a linear_kinds <<< "${LINEAR_KINDS-conv_spe sine_spe decay rotary sinusoidal none}"
read -r -a softmax_kinds <<< "${SOFTMAX_KINDS-shaw rotary}"
softmax_tasks=${SOFTMAX_TASKS-$tasks}

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

# One task's seeds FIRST..S with attention ATTENTION and the kinds given: `spe compare` over them
# (with all finished it only writes the table of seeds FIRST..S).
compare() {
  local task=$1 s=$2 attention=$3 kinds=$4 n
  n=$(steps "$task")
  "$spe" --threads 1 compare --task "$task" --seeds "$s" --first-seed "$first" \
    --set "data.dir=data/$task" "train.steps=$n" "train.eval_every=$((n / 10))" \
    "train.checkpoint_every=$((n / 10))" train.log_every=50 --out "$out/$task/$attention" \
    --attention "$attention" --pe "$kinds"
}
export -f compare steps
export spe out first

for task in $tasks; do prepare "$task"; mkdir -p "$out/$task"; done
# One line per cell, "TASK SEED ATTENTION KIND", seed by seed, all in one queue run JOBS at a
# time, each cell with its own log: a core that one task's last cell frees starts the next
# task's first (a queue per task left it idle until the task's slowest cell ended).
# The linear cells first, then the quadratic references of the tasks in softmax_tasks.
{ for s in $(seq "$first" "$seeds"); do
    for task in $tasks; do for pe in "${linear_kinds[@]}"; do echo "$task $s linear $pe"; done; done
  done
  for s in $(seq "$first" "$seeds"); do
    for task in $softmax_tasks; do for pe in "${softmax_kinds[@]}"; do echo "$task $s softmax $pe"; done; done
  done; } | xargs -P "$jobs" -L 1 bash -c 'compare "$0" "$1" "$2" "$3" > "$out/$0/$2-$3-seed$1.log" 2>&1'
# the tables of every cell together, seeds FIRST..SEEDS
if [ ${#linear_kinds[@]} -gt 0 ]; then
  for task in $tasks; do compare "$task" "$seeds" linear "$(IFS=,; echo "${linear_kinds[*]}")"; done
fi
if [ ${#softmax_kinds[@]} -gt 0 ]; then
  for task in $softmax_tasks; do compare "$task" "$seeds" softmax "$(IFS=,; echo "${softmax_kinds[*]}")"; done
fi
