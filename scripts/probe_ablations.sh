#!/usr/bin/env bash
# The position-probe ablations of docs/RESULTS.md: each row is one attention, one positional
# encoding and its overrides on top of configs/probe/PROBE.yaml, trained for every probe and seed
# with `spe compare` (1,000 steps of 16 unless a row overrides it), two runs at a time on one
# thread each. Resumable: runs with a summary are not run again, started ones resume.
# Usage: scripts/probe_ablations.sh [SEEDS] [OUT] [ROW_FILTER] [PROBES]
#   ROW_FILTER: an extended regular expression on the row names (default: every row)
# then: python3 scripts/probe_table.py OUT   (the markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1}
out=${2:-runs/probe_ablations}
filter=${3:-.}
probes=${4:-order offset}
spe=build/spe

# name | attention | positional kind | overrides
rows=$(cat <<'ROWS'
softmax-rotary | softmax | rotary |
softmax-sine-exact | softmax | sine_spe | model.positional.code=exact
none | linear | none |
sinusoidal | linear | sinusoidal |
rotary-inputs | linear | rotary |
rotary-features | linear | rotary | model.positional.place=features
sine-sampled-inputs | linear | sine_spe |
sine-sampled-inputs-R512-ungated | linear | sine_spe | model.positional.realizations=512 model.positional.gated=false
sine-sampled-features | linear | sine_spe | model.positional.place=features
sine-exact-features | linear | sine_spe | model.positional.place=features model.positional.code=exact
sine-exact-features-spread | linear | sine_spe | model.positional.place=features model.positional.code=exact model.positional.init=spread
sine-exact-features-spread-ungated | linear | sine_spe | model.positional.place=features model.positional.code=exact model.positional.init=spread model.positional.gated=false
conv-sampled-inputs | linear | conv_spe |
conv-sampled-features | linear | conv_spe | model.positional.place=features
lra-none | linear | none | model.attention.feature_map=relu model.pooling=cls train.lr=0.003
lra-rotary-inputs | linear | rotary | model.attention.feature_map=relu model.pooling=cls train.lr=0.003
lra-rotary-features | linear | rotary | model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.place=features
lra-sine-sampled-inputs | linear | sine_spe | model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.realizations=64 model.positional.sines=10
lra-sine-sampled-features | linear | sine_spe | model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.realizations=64 model.positional.sines=10 model.positional.place=features
lra-sine-exact-features | linear | sine_spe | model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.place=features model.positional.code=exact
lra-sine-exact-features-spread | linear | sine_spe | model.attention.feature_map=relu model.pooling=cls train.lr=0.003 model.positional.place=features model.positional.code=exact model.positional.init=spread
favor-sine-exact-features-spread | favor | sine_spe | model.positional.place=features model.positional.code=exact model.positional.init=spread
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
  overrides=$(echo "$overrides" | xargs)
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
xargs -P 2 -I{} bash -c '{}' < "$jobs_file"
echo "probe ablations: done"
