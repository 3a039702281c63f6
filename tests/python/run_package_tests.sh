#!/bin/sh
# Installs the spe_torch package (python/) into a fresh virtual environment the way docs/PYTHON.md
# tells users to, then runs tests/python/test_spe_torch.py and the README's Python quickstart with
# that environment's interpreter. Exits non-zero on any failure.
# Usage: tests/python/run_package_tests.sh BUILD_DIR   (BUILD_DIR holds libspe_torch_ops.so, and spe)
set -eu
if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
library=$build/libspe_torch_ops.so
if [ ! -f "$library" ]; then
  echo "error: $library not found (build the spe_torch_ops target)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
venv=$tmp/venv

echo "== installing ./python into $venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
# pip builds in the source tree: start from no earlier build, so that what is tested is what is there.
rm -rf "$root/python/build" "$root/python/spe_torch.egg-info"
(cd "$root" && "$venv/bin/pip" install --quiet --no-build-isolation --no-index ./python)

# From an empty folder, so that spe_torch comes from the environment, not from the source tree.
cd "$tmp"
"$venv/bin/python" -c 'import spe_torch, sys; sys.exit(not spe_torch.__file__.startswith(sys.prefix))' || {
  echo "error: spe_torch is not imported from the virtual environment" >&2
  exit 1
}
export SPE_TORCH_OPS="$library"
if [ -x "$build/spe" ]; then
  export SPE_CLI="$build/spe"
fi

echo "== tests/python/test_spe_torch.py"
"$venv/bin/python" "$here/test_spe_torch.py" -v

echo "== the README's Python quickstart"
awk '/^<!-- python-quickstart -->$/ { inside = 1; next } /^<!-- \/python-quickstart -->$/ { inside = 0 } inside' \
  "$root/README.md" | awk '/^```python$/ { code = 1; next } /^```$/ { code = 0 } code' > quickstart.py
if [ ! -s quickstart.py ]; then
  echo "error: README.md has no python block between <!-- python-quickstart --> and its end marker" >&2
  exit 1
fi
"$venv/bin/python" quickstart.py
echo "== spe_torch: all passed"
