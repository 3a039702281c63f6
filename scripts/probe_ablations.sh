#!/usr/bin/env bash
# The position-probe ablations of docs/RESULTS.md: each row is one attention, one positional
# encoding and its overrides on top of configs/probe/PROBE.yaml, trained for every probe and seed
# with `spe compare` (1,000 steps of 16 unless a row overrides it), PARALLEL runs at a time (2) on one
# thread each. Resumable: runs with a summary are not run again, started ones resume.
# Usage: scripts/probe_ablations.sh [SEEDS] [OUT] [ROW_FILTER] [PROBES] [EXTRA_OVERRIDES]
#   ROW_FILTER: an extended regular expression on the row names (default: every row)
#   EXTRA_OVERRIDES: added to every row's, e.g. "train.steps=3000" (use another OUT)
# Environment: SPE (the spe binary, default build/spe), PARALLEL (runs at a time, default 2).
# then: python3 scripts/probe_table.py OUT   (the markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1}
out=${2:-runs/probe_ablations}
filter=${3:-.}
probes=${4:-order offset}
extra=${5:-}
spe=${SPE:-build/spe}
parallel=${PARALLEL:-2}

# Two setups, spelled out in full so that each row means the same whatever the base config holds:
#   first: the byte-level config as it was (elu+1 features, mean pooling, lr 1e-3)
#   lra:   the authors' LRA setup (ReLU features, a [CLS] token, lr 3e-3)
# both with SPE's gate at the reference's start (gate_mean 0; the shipped configs now start it at -3).
first="model.attention.feature_map=elu model.pooling=mean train.lr=0.001 model.positional.gate_mean=0"
lra="model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.gate_mean=0"
sampled_inputs="model.positional.place=inputs model.positional.code=sampled"
sampled_features="model.positional.place=features model.positional.code=sampled"
exact_features="model.positional.place=features model.positional.code=exact"
# name | attention | positional kind | overrides
rows=$(cat <<ROWS
softmax-rotary | softmax | rotary | $first
softmax-sine-exact | softmax | sine_spe | $first model.positional.code=exact
none | linear | none | $first
sinusoidal | linear | sinusoidal | $first
rotary-inputs | linear | rotary | $first model.positional.place=inputs
rotary-features | linear | rotary | $first model.positional.place=features
sine-sampled-inputs | linear | sine_spe | $first $sampled_inputs
sine-sampled-inputs-R512-ungated | linear | sine_spe | $first $sampled_inputs model.positional.realizations=512 model.positional.gated=false
sine-sampled-features | linear | sine_spe | $first $sampled_features
sine-exact-features | linear | sine_spe | $first $exact_features
sine-exact-features-spread | linear | sine_spe | $first $exact_features model.positional.init=spread
sine-exact-features-spread-ungated | linear | sine_spe | $first $exact_features model.positional.init=spread model.positional.gated=false
conv-sampled-inputs | linear | conv_spe | $first $sampled_inputs
conv-sampled-features | linear | conv_spe | $first $sampled_features
lra-conv-sampled-features | linear | conv_spe | $lra $sampled_features
lra-conv-sampled-features-gate-3 | linear | conv_spe | $lra $sampled_features model.positional.gate_mean=-3
favor-sine-exact-features-spread | favor | sine_spe | $first $exact_features model.positional.init=spread
lra-none | linear | none | $lra
lra-rotary-inputs | linear | rotary | $lra model.positional.place=inputs
lra-rotary-features | linear | rotary | $lra model.positional.place=features
lra-sine-sampled-inputs | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_inputs
lra-sine-sampled-features | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_features
lra-sine-sampled-features-gate-3 | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_features model.positional.gate_mean=-3
lra-sine-orthogonal-features | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_features model.positional.noise=orthogonal
lra-sine-orthogonal-features-R320 | linear | sine_spe | $lra model.positional.realizations=320 model.positional.sines=10 $sampled_features model.positional.noise=orthogonal
lra-sine-orthogonal-features-R336 | linear | sine_spe | $lra model.positional.realizations=336 model.positional.sines=10 $sampled_features model.positional.noise=orthogonal
lra-sine-orthogonal-features-K5-R176 | linear | sine_spe | $lra model.positional.realizations=176 model.positional.sines=5 $sampled_features model.positional.noise=orthogonal
lra-sine-orthogonal-features-ungated | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_features model.positional.noise=orthogonal model.positional.gated=false
lra-sine-orthogonal-features-R320-ungated | linear | sine_spe | $lra model.positional.realizations=320 model.positional.sines=10 $sampled_features model.positional.noise=orthogonal model.positional.gated=false
lra-sine-sampled-features-ungated | linear | sine_spe | $lra model.positional.realizations=64 model.positional.sines=10 $sampled_features model.positional.gated=false
lra-sine-sampled-features-R320-ungated | linear | sine_spe | $lra model.positional.realizations=320 model.positional.sines=10 $sampled_features model.positional.gated=false
lra-sine-exact-features | linear | sine_spe | $lra $exact_features
lra-sine-exact-features-gate-3 | linear | sine_spe | $lra $exact_features model.positional.gate_mean=-3
lra-sine-exact-features-K10 | linear | sine_spe | $lra model.positional.sines=10 $exact_features
lra-sine-exact-features-K10-gate-3 | linear | sine_spe | $lra model.positional.sines=10 $exact_features model.positional.gate_mean=-3
lra-sine-exact-features-spread | linear | sine_spe | $lra $exact_features model.positional.init=spread
lra-sine-exact-features-ungated | linear | sine_spe | $lra $exact_features model.positional.gated=false
lra-sine-exact-features-spread-ungated | linear | sine_spe | $lra $exact_features model.positional.init=spread model.positional.gated=false
lra-decay | linear | decay | $lra
lra-decay-learnable | linear | decay | $lra model.positional.learnable_decay=true
lra-toeplitz | linear | toeplitz | $lra
ROWS
)

for probe in $probes; do
  [ -f "data/probe_$probe/test.bin" ] || "$spe" data probe --kind "$probe" --out "data/probe_$probe" > /dev/null
done
mkdir -p "$out"
jobs_file=$(mktemp)
trap 'rm -f "$jobs_file"' EXIT
while IFS='|' read -r name attention pe overrides; do
  name=$(echo "$name" | xargs); attention=$(echo "$attention" | xargs); pe=$(echo "$pe" | xargs)
  overrides=$(echo "$overrides $extra" | xargs)
  [[ "$name" =~ $filter ]] || continue
  for probe in $probes; do
    dir="$out/$probe/$name"
    mkdir -p "$dir"
    echo "$overrides" > "$dir/overrides.txt"
    set_args=""
    [ -n "$overrides" ] && set_args="--set $overrides"
    echo "$spe --threads 1 compare --task probe_$probe --config configs/probe/$probe.yaml --out $dir --pe $pe" \
         "--attention $attention --seeds $seeds $set_args > $dir/log.txt 2>&1 || echo 'failed: $dir'" >> "$jobs_file"
  done
done <<< "$rows"
echo "probe ablations: $(wc -l < "$jobs_file") grids into $out"
xargs -P "$parallel" -I{} bash -c '{}' < "$jobs_file"
echo "probe ablations: done"
