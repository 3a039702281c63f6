#!/usr/bin/env bash
# Seed corpora for the fuzzers, from real files: Debian's MIDI files and Fashion-MNIST labels,
# the project's configurations, and datasets, checkpoints and command lines made by `spe` itself.
#   fuzz/seeds.sh SPE CORPUS_DIR     (SPE: the main build's spe binary)
# Each corpus is made once; delete its folder to make it anew.
set -euo pipefail
cd "$(dirname "$0")/.."
spe=$1 corpus=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fresh() { [ ! -d "$corpus/$1" ] || [ -z "$(ls -A "$corpus/$1")" ]; }
mkdir -p "$corpus"/{midi,remi,dataset,idx,labelled_text,config,checkpoint,cli}

if fresh midi; then
  for f in /usr/share/games/openttd/baseset/openmsx/*.mid /usr/share/games/simutrans/music/*.mid; do
    [ -f "$f" ] && cp "$f" "$corpus/midi/"
  done
fi
if fresh remi; then  # the token sequences of those files, as little-endian u16 (the first 4,000)
  for f in "$corpus"/midi/*.mid; do
    "$spe" midi encode "$f" --ids 2>/dev/null |
      python3 -c 'import sys, struct; ids = [int(w) for w in sys.stdin.read().split()][:4000]; sys.stdout.buffer.write(struct.pack("<%dH" % len(ids), *ids))' \
        > "$corpus/remi/$(basename "$f" .mid).bin"
  done
fi

if fresh labelled_text; then  # first byte: bit 0 CSV, bit 1 pairs (see fuzz_labelled_text.cpp)
  printf '\x00{"text": "a fine day", "label": "ham"}\n{"text": "win money now", "label": 1}\n' > "$corpus/labelled_text/one.jsonl"
  printf '\x02{"a": "first", "b": "second", "label": true}\n\n{"a": "x", "b": "y", "label": "no"}\n' > "$corpus/labelled_text/pairs.jsonl"
  printf '\x01text,label\n"quoted, with comma",spam\nplain,ham\r\n"multi\nline ""quote""",ham\n' > "$corpus/labelled_text/one.csv"
  printf '\x03label,a,b\n1,x,y\n0,"p","q"\n' > "$corpus/labelled_text/pairs.csv"
fi

"$spe" data listops --out "$work/listops" --train 3 --valid 2 --test 2 --min-length 20 --max-length 60 > /dev/null

if fresh dataset; then  # small real datasets, without their 8-byte checksum (the target appends it)
  tail -n +2 "$corpus/labelled_text/pairs.jsonl" > "$work/pairs.jsonl"
  for i in 1 2 3; do cat "$work/pairs.jsonl"; done | sed "s/\"x\"/\"x$RANDOM\"/" > "$work/pairs6.jsonl"
  python3 - "$work/texts.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"text": "message number %d" % i, "label": "ab"[i % 2]}) + "\n")
PY
  "$spe" data text --input "$work/texts.jsonl" --out "$work/text" > /dev/null
  for split in train valid test; do
    for task in listops text; do
      head -c -8 "$work/$task/$split.bin" > "$corpus/dataset/$task-$split.bin"
    done
  done
fi

if fresh idx; then  # the test labels as they are, and the first images, plain and gzipped
  cp /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz "$corpus/idx/"
  python3 - "$corpus/idx" <<'PY'
import gzip, struct, sys
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    f.read(16)
    pixels = f.read(4 * 784)
data = struct.pack(">BBBBIII", 0, 0, 8, 3, 4, 28, 28) + pixels
open(sys.argv[1] + "/images4.idx", "wb").write(data)
open(sys.argv[1] + "/images4.idx.gz", "wb").write(gzip.compress(data))
PY
fi

if fresh config; then  # the project's configurations; some with overrides after a NUL byte
  for f in configs/*/*.yaml; do cp "$f" "$corpus/config/$(echo "$f" | tr / _)"; done
  { cat configs/listops/linear_sine_spe.yaml; printf '\0model.layers=1\ntrain.schedule=linear\nmodel.positional.gated=true'; } \
    > "$corpus/config/overrides.yaml"
fi

if fresh checkpoint; then  # the payloads of two tiny runs' checkpoints (the target puts them in an envelope)
  for model in "model.positional.kind=sine_spe" "model.attention.kind=softmax"; do
    name=$(echo "$model" | tr -c 'a-z\n' _)
    "$spe" --threads 1 train --config configs/listops/linear_sine_spe.yaml --out "$work/run_$name" \
      --set data.dir="$work/listops" --set "$model" --set model.dim=8 --set model.layers=1 --set model.heads=1 \
      --set model.ffn_dim=8 --set train.steps=1 --set train.batch_size=2 --set train.eval_batch_size=2 \
      > "$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
    tail -c +29 "$work/run_$name/checkpoint.pt" > "$corpus/checkpoint/$name.bin"  # without the 28-byte preamble
  done
fi

if fresh cli; then  # command lines from the README, arguments separated by NUL bytes
  i=0
  while IFS= read -r line; do
    i=$((i + 1))
    printf '%s' "$line" | tr ' ' '\0' > "$corpus/cli/line$i"
  done <<'LINES'
train --config configs/listops/linear_sine_spe.yaml --out runs/x --set model.layers=4 train.steps=5000
train --out runs/sine --resume --budget 5 --until-step 10
train --nproc 2 --threads 2 --config configs/listops/linear_sine_spe.yaml --out runs/dp --timeout 30
eval --checkpoint runs/sine/best.pt --split test
config --config configs/listops/softmax_shaw.yaml
plot --metrics a/metrics.jsonl --metrics b/metrics.jsonl --png curves.png
compare --task listops --pe none,sinusoidal,rotary,sine_spe --attention linear --seeds 2 --budget 10 --out runs/grid
kernel --pe sine --heads 2 --dim 8 --length 256 --realizations 64 --sines 5 --gated --seed 7 --json kernel.json
kernel --pe rotary --heads 1 --dim 64 --length 4096 --rope-scaling yarn --factor 4 --original-length 1024 --json kernel.json
data listops --train 10 --valid 2 --test 2 --seed 7
data text --input mine.csv --text-field body --label-field tag --out data/mine
midi encode song.mid --out song.txt --ids
generate --checkpoint runs/m/best.pt --tokens 2048 --temperature 0.9 --top-p 0.95
extrapolate --checkpoint a.pt --checkpoint b.pt
bench causal
--threads 3 info
--version
LINES
fi
