"""Every test starts with an empty command-line speed cache of its own (runs never learn from each other)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_speed_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("speed-cache")
    monkeypatch.setenv("DISTRIBUTED_CACHE_DIR", str(folder))
    return folder
