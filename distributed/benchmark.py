"""Measuring a worker's speed: warm up, then time whole round trips of 1, 2 and 4 images, fit overhead and slope.

The timed workload's steps are scaled from the warm-up so that a worker spends about `budget_s` in all, whatever
its speed; all workers are measured at once. The result is a cost model (for planning) and images per minute at
512x512, 20 steps (for people).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from distributed.config import BenchmarkRecord
from distributed.costmodel import CostModel, Observation, Workload
from distributed.errors import WorkerError
from distributed.fleet import FleetMember

TIMED_BATCHES = (1, 2, 4)
PROMPT = "a lighthouse on a cliff at dusk, oil painting"


@dataclass
class BenchmarkOutcome:
    worker: str
    cost: CostModel | None
    record: BenchmarkRecord | None
    error: str | None = None


def _payload(workload: Workload, images: int, model: str | None, request: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        **request,
        "prompt": PROMPT,
        "width": workload.width,
        "height": workload.height,
        "steps": workload.steps,
        "batch_size": images,
        "n_iter": 1,
        "seed": 1,
        "sampler_name": "Euler a",
        "cfg_scale": 7.0,
    }
    if model:
        payload["override_settings"] = {"sd_model_checkpoint": model}
    return payload


def _timed(
    member: FleetMember, workload: Workload, images: int, model: str | None, read_s: float, request: dict[str, Any]
) -> float:
    started = time.monotonic()
    member.client.generate("txt2img", _payload(workload, images, model, request), read_s)
    return time.monotonic() - started


def benchmark_member(
    member: FleetMember,
    workload: Workload,
    budget_s: float = 10.0,
    model: str | None = None,
    request: dict[str, Any] | None = None,  # merged into every request (the master's own: "do not distribute")
) -> BenchmarkOutcome:
    started = time.monotonic()
    request = request or {}
    read_s = max(60.0, budget_s * 6)
    try:
        warm = _timed(
            member, workload, 1, model, read_s, request
        )  # loads the model, fills caches: not used for the fit
        # about a tenth of the budget per timed image: 1 + 2 + 4 images is 70% of it
        scale = min(1.0, (budget_s / 10) / max(warm, 1e-3))
        steps = max(1, min(workload.steps, round(workload.steps * scale)))
        timed = Workload(workload.width, workload.height, steps)
        observations = [
            Observation(images * timed.units, _timed(member, timed, images, model, read_s, request))
            for images in TIMED_BATCHES
        ]
    except WorkerError as error:
        member.record_error(error)
        return BenchmarkOutcome(member.name, None, None, str(error))
    cost = CostModel.fit(observations)
    cost.measured_at = workload.label
    member.cost = cost
    member.calibrated = True
    record = BenchmarkRecord(
        when=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=model,
        ipm=round(cost.ipm(), 3),
        seconds=round(time.monotonic() - started, 2),
    )
    return BenchmarkOutcome(member.name, cost, record)


def benchmark_each(
    members: list[FleetMember], workload: Workload, budget_s: float = 10.0, model: str | None = None
) -> Iterator[BenchmarkOutcome]:
    """Every worker at once; each result as its worker finishes, errors included (nothing raises)."""
    if not members:
        return
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="distributed-bench") as pool:
        futures = [pool.submit(benchmark_member, m, workload, budget_s, model) for m in members]
        for future in as_completed(futures):
            yield future.result()


def benchmark_all(
    members: list[FleetMember], workload: Workload, budget_s: float = 10.0, model: str | None = None
) -> list[BenchmarkOutcome]:
    """Every worker at once; the results in the members' order."""
    by_worker = {o.worker: o for o in benchmark_each(members, workload, budget_s, model)}
    return [by_worker[m.name] for m in members]
