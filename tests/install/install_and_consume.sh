#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds and runs a user's program against it
# twice: with CMake's find_package(spe) and with pkg-config. Also runs the installed command line.
# Then the Python package, pip-installed, finds the installed ops library through the installed `spe`.
# Usage: tests/install/install_and_consume.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
echo "installed into $prefix"

# The installed command line finds its library and says where it is.
"$prefix/bin/spe" --version | tee "$work/version.txt"
grep -q "prefix: $prefix" "$work/version.txt"

# find_package alone: no path into the source or build tree.
cmake -S "$here/consumer" -B "$work/cmake-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" > "$work/configure.log"
cmake --build "$work/cmake-build" > "$work/build.log"
"$work/cmake-build/consumer"

# pkg-config: one compiler line.
export PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name spe.pc)")"
c++ -O1 -o "$work/consumer-pc" "$here/consumer/main.cpp" $(pkg-config --cflags --libs spe)
"$work/consumer-pc"

# Python: with the installed spe on PATH and no SPE_TORCH_OPS, spe_torch loads the installed ops.
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
rm -rf "$here/../../python/build" "$here/../../python/spe_torch.egg-info"
(cd "$here/../.." && "$work/venv/bin/pip" install --quiet --no-build-isolation --no-index ./python)
(cd "$work" && env -u SPE_TORCH_OPS PATH="$prefix/bin:$PATH" "$work/venv/bin/python" -c '
import sys, spe_torch
path = spe_torch.ops_library_path()
print("spe_torch loads", path)
sys.exit(not path.startswith(sys.argv[1]))' "$prefix")
