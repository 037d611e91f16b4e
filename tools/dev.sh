#!/usr/bin/env bash
# Set up and run the project on a fresh machine. Usage: bash tools/dev.sh setup|demo|render|test|lint
#   setup  create .venv (torch first, pinned by constraints.txt), install the package with its worker and dev extras
#   demo   setup, then three local workers at speeds 5:2:1 render 24 images as one fleet into out/demo
#   render setup, then one local worker renders a few images into out/render
#   test   setup, then lint, type-check, the core's tests on A1111's pins (pydantic 1.10, Pillow 9.5), everything
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

# The core (distributed/ without worker/) runs inside A1111 1.10.1: check it against that webui's pins too.
core_on_a1111_pins() {
    local venv=.venv-a1111pins
    if [ ! -x "$venv/bin/python" ]; then
        "$PY" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pydantic==1.10.*" "Pillow==9.5.0" requests pytest pytest-timeout hypothesis
    PYTHONPATH=. "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/core
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy" distributed
    "$VENV/bin/vermin" -q --no-tips --violations -t=3.10- --eval-annotations --backport dataclasses distributed
}

case "${1:-}" in
    setup) setup ;;
    demo) setup; shift; "$VENV/bin/python" -m distributed demo "$@" ;;
    render) setup; shift; "$VENV/bin/python" -m distributed render "$@" ;;
    lint) setup; lint ;;
    test) setup; lint; core_on_a1111_pins; shift; "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: bash tools/dev.sh setup|demo|render|test|lint" >&2; exit 2 ;;
esac
