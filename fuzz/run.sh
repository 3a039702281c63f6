#!/usr/bin/env bash
# Builds the fuzzers (clang, ASan, UBSan) into build-fuzz/ and runs each on its corpus.
#   fuzz/run.sh SECONDS [TARGET...]     each target for SECONDS (CI: a short smoke run)
#   fuzz/run.sh --runs N [TARGET...]    each target for N executions (the long runs in docs/FUZZING.md)
# TARGET is one of the targets below (default: all). Fails on any finding; the crashing input is
# left in build-fuzz/findings/, each target's whole log in build-fuzz/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="$2"); shift 2
else
  limit=(-max_total_time="${1:-60}"); shift $(( $# > 0 ? 1 : 0 ))
fi
# target:corpus
all_targets=(fuzz_midi:midi fuzz_midi_read:midi fuzz_remi_decode:remi)
selected=("$@")

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

for entry in "${all_targets[@]}"; do
  target=${entry%%:*} corpus=${entry#*:}
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $target " ]]; then continue; fi
  echo "fuzz: $target ${limit[*]} on corpus/$corpus"
  "build-fuzz/$target" "${limit[@]}" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/ "build-fuzz/corpus/$corpus" > "build-fuzz/$target.log" 2>&1 ||
    { tail -n 40 "build-fuzz/$target.log"; exit 1; }
  tail -n 12 "build-fuzz/$target.log"
done
