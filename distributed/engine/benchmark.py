"""Measuring a worker's speed: warm up, then time whole round trips of 1, 2 and 4 images, fit overhead and slope.

The warm-up is one step at the asked size; the timed workload's steps are scaled from it so that a worker spends
about `budget_s` in all, whatever its speed; a call that cannot finish in time is interrupted on its worker. All
workers are measured at once. The result is a cost model (for planning) and images per minute at
512x512, 20 steps (for people).
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from distributed.engine.config import BenchmarkRecord
from distributed.engine.costmodel import CostModel, Observation, Workload
from distributed.engine.fleet import FleetMember
from distributed.errors import WorkerError, WorkerTimeout

logger = logging.getLogger(__name__)

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
    """Within about `budget_s`: a 1-step warm-up at the asked size (loads the model), then 1, 2 and 4 images at as
    many steps as the budget allows. A call that cannot finish in time is interrupted on the worker, and the outcome
    says what to change (a smaller size, a longer budget)."""
    started = time.monotonic()
    request = request or {}
    warm_load = Workload(workload.width, workload.height, 1)
    try:
        # a first call may load a model: it gets three budgets, and is interrupted after that
        step_s = _bounded(member, warm_load, 1, model, 3 * budget_s, request, workload, budget_s)
        if step_s > budget_s / 2:  # perhaps mostly loading: time one step again
            step_s = min(step_s, _bounded(member, warm_load, 1, model, 2 * step_s, request, workload, budget_s))
        rounds = sum(TIMED_BATCHES)
        if rounds * step_s > 3 * budget_s:  # even one step per image would overrun: say so before trying
            raise WorkerTimeout(
                member.name,
                f"one step of a {workload.width}x{workload.height} image takes {step_s:.1f} s, so timing "
                f"{rounds} images would take about {rounds * step_s:.0f} s. Try a smaller size "
                f"({_smaller(workload)}) or --budget {math.ceil(rounds * step_s * 1.5)}.",
            )
        # 1 + 2 + 4 images at `steps` should take about 70% of what is left
        left = max(0.0, budget_s - (time.monotonic() - started))
        steps = max(1, min(workload.steps, int(0.7 * left / (rounds * step_s))))
        timed = Workload(workload.width, workload.height, steps)
        observations = []
        for images in TIMED_BATCHES:
            read_s = max(budget_s, 3 * images * steps * step_s)
            seconds = _bounded(member, timed, images, model, read_s, request, workload, budget_s)
            observations.append(Observation(images * timed.units, seconds))
    except WorkerError as error:
        member.record_error(error)
        return BenchmarkOutcome(member.name, None, None, str(error))
    cost = CostModel.fit(observations)
    cost.measured_at = workload.label  # speeds are shown at the size asked for (the fit is per megapixel-step)
    member.cost = cost
    member.calibrated = True
    record = BenchmarkRecord(
        when=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=model,
        ipm=round(cost.ipm(), 3),
        seconds=round(time.monotonic() - started, 2),
    )
    return BenchmarkOutcome(member.name, cost, record)


def _bounded(
    member: FleetMember,
    workload: Workload,
    images: int,
    model: str | None,
    read_s: float,
    request: dict[str, Any],
    asked: Workload,
    budget_s: float,
) -> float:
    """One timed call; past `read_s` the worker is told to stop and the error says what to change."""
    try:
        return _timed(member, workload, images, model, read_s, request)
    except WorkerTimeout as error:
        try:
            member.client.interrupt()  # nothing keeps rendering for a benchmark that gave up
        except WorkerError as ignored:
            logger.debug("interrupt after a benchmark timeout failed: %s", ignored)
        raise WorkerTimeout(
            member.name,
            f"{images} image(s) at {workload.label} did not finish within {read_s:.0f} s ({error.detail}); "
            f"interrupted on the worker. Try a smaller size ({_smaller(asked)}) or a longer --budget "
            f"(now {budget_s:g} s).",
        ) from None


def _smaller(workload: Workload) -> str:
    return f"--width {max(64, workload.width // 2)} --height {max(64, workload.height // 2)}"


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
