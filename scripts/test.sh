#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and what README.md tells you
# to run. Installs missing tools, makes sure the Docker engine answers and the
# local base image exists, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh --test

if command -v docker >/dev/null 2>&1; then
    if ! docker info >/dev/null 2>&1; then
        echo "test: the Docker engine does not answer; starting it"
        if command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null; then
            :
        else
            (dockerd >/tmp/dockerd.log 2>&1 &)
        fi
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    if docker info >/dev/null 2>&1; then
        scripts/build-base-image.sh
    else
        echo "test: no Docker engine; the Docker tests will say they are skipped"
    fi
fi

# The lints first: cheap, and a layer or SAFETY-comment slip fails here.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The Python package (python/): its wheel and its pytest suite, run even
# when a cargo test failed (the status is the first failure's).
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
scripts/test-python.sh || { s=$?; [ "$status" -ne 0 ] || status=$s; }
exit "$status"
