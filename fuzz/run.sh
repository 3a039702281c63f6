#!/usr/bin/env bash
# Builds the fuzzers (clang, ASan, UBSan) into build-fuzz/ and runs each on its corpus.
#   fuzz/run.sh SECONDS          each target for SECONDS (CI: a short smoke run)
#   fuzz/run.sh --runs N         each target for N executions (the long runs in docs/FUZZING.md)
# Fails on any finding; the crashing input is left in build-fuzz/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time="${1:-60}")
if [ "${1:-}" = "--runs" ]; then limit=(-runs="$2"); fi

CC=clang CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build-fuzz -j 2

# Seed corpora: Debian's MIDI files, and their token sequences for the decoder.
mkdir -p build-fuzz/corpus/midi build-fuzz/corpus/remi build-fuzz/findings
for f in /usr/share/games/openttd/baseset/openmsx/*.mid /usr/share/games/simutrans/music/*.mid; do
  [ -f "$f" ] && cp -n "$f" build-fuzz/corpus/midi/
done
if [ -x build/spe ] && [ -z "$(ls -A build-fuzz/corpus/remi)" ]; then
  for f in build-fuzz/corpus/midi/*.mid; do
    build/spe midi encode "$f" --ids 2>/dev/null |
      python3 -c 'import sys, struct; ids = [int(w) for w in sys.stdin.read().split()][:4000]; sys.stdout.buffer.write(struct.pack("<%dH" % len(ids), *ids))' \
        > "build-fuzz/corpus/remi/$(basename "$f" .mid).bin"
  done
fi

for target in midi remi; do
  binary=build-fuzz/fuzz_midi
  [ "$target" = remi ] && binary=build-fuzz/fuzz_remi_decode
  echo "fuzz: $binary ${limit[*]}"
  "$binary" "${limit[@]}" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/ build-fuzz/corpus/$target 2>&1 | tail -n 12
done
