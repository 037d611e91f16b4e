"""distributed: turn several Stable Diffusion webui machines into one image generator.

The public API is below. Names load on first use, so `import distributed` stays cheap inside the webui.

    distributed/engine/   workers.json, the worker client, errors mapped, cost model, planner, dispatcher, chunk book
    distributed/master/   pure helpers of the webui master: payload allow-list, preflight, fleet manager, views
    distributed/webui/    the adapter: the only code importing the webui's `modules` and gradio
    distributed/cli/      `python -m distributed ...`: commands, terminal output, charts, local fleets
    distributed/worker/   the headless worker: FastAPI app speaking /sdapi/v1, diffusion backend
    distributed/bench/    benchmarks that print ratios measured in one run
One-image parallelism (`parallel/`), the gateway (`gateway/`) and training (`training/`) get packages of their own.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CostModel": "distributed.engine.costmodel",
    "Workload": "distributed.engine.costmodel",
    "FleetConfig": "distributed.engine.config",
    "WorkerConfig": "distributed.engine.config",
    "load_config": "distributed.engine.config",
    "save_config": "distributed.engine.config",
    "Fleet": "distributed.engine.fleet",
    "WorkerClient": "distributed.engine.client",
    "Job": "distributed.engine.dispatcher",
    "JobSpec": "distributed.engine.jobs",
    "JobResult": "distributed.engine.jobs",
    "DistributedError": "distributed.errors",
    "run_job": "distributed.cli.generate",
}

__all__ = [
    "CostModel",
    "DistributedError",
    "Fleet",
    "FleetConfig",
    "Job",
    "JobResult",
    "JobSpec",
    "WorkerClient",
    "WorkerConfig",
    "Workload",
    "__version__",
    "load_config",
    "run_job",
    "save_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distributed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
