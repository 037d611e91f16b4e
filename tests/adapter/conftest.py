"""The adapter tier: the real Script class and callbacks inside a fake webui `modules` package, real workers.

Runs where gradio is installed (the A1111 and Forge pin environments of tools/dev.sh); skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("gradio")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).resolve().parent / "fakewebui"
sys.path.insert(0, str(FAKE))

from distributed.cli.localfleet import LocalWorker, start_all  # noqa: E402


def load_script_file() -> ModuleType:
    """scripts/distributed.py loaded by path, as the webui's script_loading does."""
    spec = importlib.util.spec_from_file_location("distributed_script_file", ROOT / "scripts" / "distributed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fleet_workers() -> Iterator[dict[str, LocalWorker]]:
    workers = {
        "fast": LocalWorker("fast", emulate_ipm=240),
        "slow": LocalWorker("slow", emulate_ipm=120),
    }
    start_all(list(workers.values()))
    try:
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


@pytest.fixture()
def webui(tmp_path: Path) -> Iterator[Any]:
    """A fresh extension runtime whose workers.json lives in tmp_path; state and recordings reset."""
    from modules import errors, images, processing, script_callbacks, shared

    from distributed.webui.runtime import close_runtime

    close_runtime()
    shared.cmd_opts.distributed_config = str(tmp_path / "workers.json")
    shared.cmd_opts.distributed_remotes = None
    shared.cmd_opts.distributed_remotes_autosave = False
    shared.cmd_opts.api_auth = None
    script_callbacks.clear_callbacks()
    for recorded in (errors.reported, images.saved, images.grids, processing.samples_drawn, processing.batches_drawn):
        recorded.clear()
    processing.emulated_seconds_per_image = 0.2  # the master renders at a GPU-like pace, not instantly
    shared.state.begin("test")
    yield shared
    processing.emulated_seconds_per_image = 0.0
    close_runtime()
    assert errors.reported == [], errors.reported[0] if errors.reported else ""
