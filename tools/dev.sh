#!/usr/bin/env bash
# Set up and run the project on a fresh machine. Usage: bash tools/dev.sh setup|demo|render|test|lint|mutations
#   setup  create .venv (torch first, pinned by constraints.txt), install the package with its worker, dev, charts and train extras
#   demo   setup, then three local workers at speeds 5:2:1 render 24 images as one fleet into out/demo
#   render setup, then one local worker renders a few images into out/render
#   test   setup, lint, type-check; core, adapter and browser tests on A1111's and Forge's pins; then everything;
#          then the mutation check (tools/mutations.py: named breakages that must make their tests fail)
#   mutations  only the mutation check
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
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[worker,dev,charts,train]"
}

# The extension runs inside A1111 1.10.1 (gradio 3.41.2, fastapi 0.94, pydantic 1.10, Pillow 9.5) and Forge
# (gradio 4.40, fastapi 0.104, pydantic 2.8): the core, the adapter and the tab's browser tests run on both pin sets.
# Workers for those tests run from .venv (DISTRIBUTED_WORKER_PYTHON); torch comes first, from pip, as in setup.
# tools/pins-*.txt hold the versions those webuis resolve to, so pip does not spend minutes backtracking.
pins_venv() {
    local venv=$1 pins=$2
    if [ ! -x "$venv/bin/python" ]; then
        "$PY" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -c "$pins" \
        -r "$pins" pytest pytest-timeout hypothesis playwright "rich>=13.7,<15"
}

on_pins() {
    local venv=$1; shift
    export DISTRIBUTED_WORKER_PYTHON="$PWD/$VENV/bin/python" PYTHONPATH=.
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/core tests/adapter "$@"
    # gradio's server threads import lazily; Python 3.11.7's parser is not thread-safe under pytest's assertion
    # rewriting of plugin modules (hypothesis), so the browser tier runs without that plugin
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -p no:hypothesispytest tests/ui "$@"
}

a1111_pins() {
    pins_venv .venv-a1111pins tools/pins-a1111.txt
    on_pins .venv-a1111pins
}

forge_pins() {
    pins_venv .venv-forgepins tools/pins-forge.txt
    on_pins .venv-forgepins
}

browser() {
    # the UI tests drive Debian's chromium through Playwright (no browser download: the network is closed)
    if [ ! -x /usr/bin/chromium ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
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
    test) setup; lint; browser; a1111_pins; forge_pins; shift; "$VENV/bin/python" -m pytest "$@"
          "$VENV/bin/python" tools/mutations.py ;;
    mutations) setup; browser; pins_venv .venv-a1111pins tools/pins-a1111.txt; "$VENV/bin/python" tools/mutations.py ;;
    pins) setup; browser; a1111_pins; forge_pins ;;
    *) echo "usage: bash tools/dev.sh setup|demo|render|test|lint|mutations" >&2; exit 2 ;;
esac
