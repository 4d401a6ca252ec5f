#!/usr/bin/env bash
# The Python package's tests: builds and installs the wheel the way a user
# does (`pip install ./python`, maturin, release) into target/pyvenv (made
# by scripts/deps.sh --test), then runs python/tests against daemons of the
# chimaera binary cargo built ($CHIMAERA_BIN, else target/debug/chimaera).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyvenv
if [ ! -x "$venv/bin/maturin" ] || [ ! -x "$venv/bin/pytest" ]; then
    scripts/deps.sh --test
fi
export CHIMAERA_BIN="${CHIMAERA_BIN:-$PWD/target/debug/chimaera}"
if [ ! -x "$CHIMAERA_BIN" ]; then
    cargo build --bin chimaera
fi

# Without build isolation the venv's maturin builds it: nothing is fetched.
PATH="$PWD/$venv/bin:$PATH" timeout 900 "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --no-build-isolation --force-reinstall --no-deps ./python
# From the repository root, so `import chimaera` is the installed package.
timeout 600 "$venv/bin/pytest" -q -p no:cacheprovider python/tests "$@"
