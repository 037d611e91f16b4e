#!/usr/bin/env bash
# Set up and run the project on a fresh machine. Usage: bash tools/dev.sh setup|demo|test|lint
#   setup  create .venv (torch first, pinned by constraints.txt), install the package with its worker and dev extras
#   demo   setup, then render images with a local headless worker into out/
#   test   setup, then lint, type-check and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # torch must come first and from pip: resolvers must never pick another build (see constraints.txt)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[worker,dev]"
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy" distributed
    "$VENV/bin/vermin" -q --no-tips --violations -t=3.10- --eval-annotations --backport dataclasses distributed
}

case "${1:-}" in
    setup) setup ;;
    demo) setup; shift; "$VENV/bin/python" -m distributed render "$@" ;;
    lint) setup; lint ;;
    test) setup; lint; shift; "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: bash tools/dev.sh setup|demo|test|lint" >&2; exit 2 ;;
esac
