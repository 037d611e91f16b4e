"""Learned speeds remembered between command-line runs without --config: a cache keyed by worker URL.

Only a starting point: a worker's cost model from workers.json always wins, and every job keeps learning. The cache
lives in the user's cache folder (`$DISTRIBUTED_CACHE_DIR`, else `$XDG_CACHE_HOME/distributed`, else
`~/.cache/distributed`), holds no secret, and a damaged cache is ignored with a warning, never an error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from distributed.compat import copy_with, dump, validate
from distributed.engine.config import CostModelState, FleetConfig, atomic_write_text
from distributed.engine.fleet import Fleet
from distributed.errors import ConfigError

logger = logging.getLogger(__name__)


def cache_path() -> Path:
    folder = os.environ.get("DISTRIBUTED_CACHE_DIR")
    if folder:
        return Path(folder) / "speeds.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "distributed" / "speeds.json"


def load_speeds(path: Path | None = None) -> dict[str, CostModelState]:
    path = path or cache_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(url): validate(CostModelState, state) for url, state in dict(raw).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, ValidationError) as error:
        logger.warning("ignoring the speed cache %s: %s", path, error)
        return {}


def with_cached_speeds(config: FleetConfig, path: Path | None = None) -> FleetConfig:
    """Workers with no cost model of their own start from what an earlier run learned at the same URL."""
    speeds = load_speeds(path)
    workers = [
        copy_with(w, cost_model=speeds[w.url.rstrip("/")])
        if w.cost_model is None and w.url.rstrip("/") in speeds
        else w
        for w in config.workers
    ]
    return copy_with(config, workers=[dump(w) for w in workers])


def remember_speeds(fleet: Fleet, path: Path | None = None) -> None:
    """What this run learned, for the next one (a failure to write is a warning: the images matter more)."""
    path = path or cache_path()
    speeds = {url: dump(state) for url, state in load_speeds(path).items()}
    for member in fleet:
        if member.calibrated and member.cost is not None:
            speeds[member.config.url.rstrip("/")] = dump(member.cost.to_state())
    try:
        atomic_write_text(path, json.dumps(speeds, indent=2) + "\n")
    except ConfigError as error:
        logger.warning("speeds not remembered in %s: %s", path, error)
