"""The core is pure: it imports no webui (`modules`), no gradio, and nothing heavy, so it loads anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BLOCKED = ["modules", "gradio", "torch", "diffusers", "transformers", "fastapi", "uvicorn", "starlette"]
SCRIPT = """
import importlib, importlib.abc, pkgutil, sys

BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the core imported {{name}}")
        return None

sys.meta_path.insert(0, Block())
import distributed
names = [m.name for m in pkgutil.walk_packages(distributed.__path__, "distributed.")]
outside = ("distributed.worker", "distributed.bench", "distributed.__main__", "distributed.webui")
outside += ("distributed.gateway.app", "distributed.parallel")
outside += ("distributed.training.coordinator", "distributed.training.trainer", "distributed.training.demo")
core = [n for n in names if not n.startswith(outside)]
for name in core:
    importlib.import_module(name)
print(len(core))
"""


def test_core_imports_without_webui_gradio_or_torch() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(blocked=BLOCKED)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert int(finished.stdout.strip()) >= 15  # every core module was imported


def test_the_guard_really_blocks() -> None:
    probe = SCRIPT.format(blocked=BLOCKED) + "\nimport gradio.blocks\n"
    finished = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode != 0
    assert "the core imported gradio" in finished.stderr


def test_public_api_resolves_every_name() -> None:
    import distributed

    for name in distributed.__all__:
        assert getattr(distributed, name) is not None, name


def test_top_level_stays_small() -> None:
    top = [p for p in (REPO / "distributed").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    assert len(top) <= 15, sorted(p.name for p in top)  # six modules, and the capability packages of DESIGN.md
