#!/usr/bin/env bash
# Builds the fuzzers (clang, ASan, UBSan) into build-fuzz/ and runs each on its corpus.
#   fuzz/run.sh SECONDS [TARGET...]     each target for SECONDS (CI: a short smoke run)
#   fuzz/run.sh --runs N [TARGET...]    each target for N executions (the long runs in docs/FUZZING.md)
# TARGET is one of the targets below (default: all). Needs the main build (SPE_BUILD_DIR, default
# build/: `make build`). Fails on any finding; the crashing input is left in build-fuzz/findings/,
# each target's whole log in build-fuzz/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--runs" ]; then
  limit=(-runs="$2"); shift 2
else
  limit=(-max_total_time="${1:-60}"); shift $(( $# > 0 ? 1 : 0 ))
fi
# target:corpus:longest input (the seed checkpoints' payloads are 28 kB)
all_targets=(fuzz_midi:midi:16384 fuzz_midi_read:midi:16384 fuzz_remi_decode:remi:16384 fuzz_dataset:dataset:16384
             fuzz_idx:idx:16384 fuzz_labelled_text:labelled_text:16384 fuzz_config:config:16384
             fuzz_checkpoint:checkpoint:65536 fuzz_cli:cli:4096)
selected=("$@")
build=$(realpath "${SPE_BUILD_DIR:-build}")
for needed in spe libspe.so libspe_cli_app.a; do
  [ -f "$build/$needed" ] || { echo "fuzz: $build/$needed is missing: build spe first (make build)" >&2; exit 1; }
done

CC=clang CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPE_BUILD_DIR="$build" > /dev/null
cmake --build build-fuzz -j 2
fuzz/seeds.sh "$build/spe" build-fuzz/corpus
mkdir -p build-fuzz/findings
# AddressSanitizer's defaults (a 256 MB quarantine cycled through memory that is returned to the
# system and faulted back in, 30-frame allocation stacks in its depot) slowed the long runs of
# fuzz_config and fuzz_cli 5-30x within an hour on this VM's slow page faults. Shorter allocation
# stacks in reports and a smaller use-after-free window keep them at speed; the crash stacks are whole.
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=5:quarantine_size_mb=64:allocator_release_to_os_interval_ms=-1}"

for entry in "${all_targets[@]}"; do
  IFS=: read -r target corpus max_len <<< "$entry"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $target " ]]; then continue; fi
  echo "fuzz: $target ${limit[*]} on corpus/$corpus"
  "build-fuzz/$target" "${limit[@]}" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/ "build-fuzz/corpus/$corpus" > "build-fuzz/$target.log" 2>&1 ||
    { tail -n 40 "build-fuzz/$target.log"; exit 1; }
  tail -n 12 "build-fuzz/$target.log"
done
