"""Measuring a worker's speed: warm up, then time whole round trips, and fit every term of the cost model.

The warm-up is one step at the asked size. Then, timed: 1 and 2 images at one step and one image at PROBE_STEPS
(what a step costs, to size the rest); 1, 2 and 4 images at more steps; one image at each of two other resolutions
(probe_sizes: half, and twice or 1.5x the sides where allowed); and a 64x64 image at one step and at the asked steps
(cheap anywhere, it shows the per-request costs almost alone). The batch sizes tell per-request costs from
per-image ones, the step counts per-step costs from the rest, the three resolutions costs that grow with the pixels
from those that grow faster. Each timed request runs up to three times as the budget allows, and the fastest time
counts (a hiccup would skew the fit). The step count is scaled so that a worker spends about `budget_s` in all,
whatever its speed; a call that cannot finish in time is interrupted on its worker. All workers are measured at
once. The result is a cost model (for planning) and images per minute at 512x512, 20 steps (for people).
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

TIMED_BATCHES = (1, 2, 4)  # images per request at the asked size, at the timed step count
SHORT_BATCHES = (1, 2)  # images per request at the asked size, one step: apart from steps, the costs that do not grow
REPEATS = 3  # each timed request up to this many times as the budget allows, the fastest time kept
MIN_STEPS = 2  # the timed step count, at least: two step counts tell per-step costs from the rest
LEVELS = (2, 1, 0)  # every size; without the other resolutions; the asked size only (for the slowest workers)
PROBE_STEPS = 3  # one image at this many steps after the 1-step ones: what a step costs, to size the timed requests
PROBE_FACTORS = (0.5, 2.0, 1.5, 0.25, 0.75)  # side scales of the two other resolutions, in order of preference
PROBE_MAX_PIXELS = 1024 * 1024  # no probe larger than this (nor than the asked size, when that is larger)
DOUBLE_MAX_PIXELS = 512 * 512  # twice the sides only up to this: cheap, and within any GPU's memory
FLOOR = 64  # the smallest side the webui allows
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


def time_request(
    member: FleetMember, workload: Workload, images: int, model: str | None, read_s: float, request: dict[str, Any]
) -> float:
    """Seconds for one whole round trip of the benchmark's request at `workload`."""
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
    """Within about `budget_s`: a 1-step warm-up at the asked size (loads the model), then the timed requests. A call
    that cannot finish in time is interrupted on the worker, and the outcome says what to change (a smaller size, a
    longer budget)."""
    started = time.monotonic()
    request = request or {}
    one_step = Workload(workload.width, workload.height, 1)

    def timed(each: Workload, images: int, read_s: float) -> float:
        return _bounded(member, each, images, model, read_s, request, workload, budget_s)

    try:
        # a first call may load a model: it gets three budgets, and is interrupted after that
        first_s = timed(one_step, 1, 3 * budget_s)
        plan = [(one_step, images, max(budget_s, 3 * images * first_s)) for images in SHORT_BATCHES]
        probe = Workload(workload.width, workload.height, PROBE_STEPS)
        plan.append((probe, 1, max(budget_s, 3 * PROBE_STEPS * first_s)))
        best = [timed(each, images, read_s) for each, images, read_s in plan]
        one_step_s = min(first_s, best[0])
        # a step's own cost, and the rest of an image's (request, decode): the timed requests are sized by both
        step_s = max((best[-1] - one_step_s) / (PROBE_STEPS - 1), 0.05 * one_step_s)
        rest_s = max(0.0, one_step_s - step_s)
        max_pixels = member.config.caps.max_pixels
        # the timed requests should take about 70% of what is left: up to three times each (a hiccup then shows);
        # a worker too slow for every size in that time is timed at the asked size only
        left = 0.7 * max(0.0, budget_s - (time.monotonic() - started))
        for level in LEVELS:
            one, two = (_seconds(_plan(workload, n, max_pixels, level), workload, rest_s, step_s) for n in (1, 2))
            fixed, per_step = 2 * one - two, two - one  # the plan's cost is linear in its step count
            if fixed + MIN_STEPS * per_step <= left:
                break
        if fixed + MIN_STEPS * per_step > 3 * budget_s:  # it would overrun: say so before trying
            seconds = fixed + MIN_STEPS * per_step
            raise WorkerTimeout(
                member.name,
                f"one step of a {workload.width}x{workload.height} image takes {step_s:.1f} s, so timing "
                f"{sum(TIMED_BATCHES)} images at {MIN_STEPS} steps would take about {seconds:.0f} s. "
                f"Try {_smaller(workload)}a budget of {math.ceil(1.5 * seconds)} s "
                "(--budget, or budget_s in the REST API).",
            )
        affordable = int(left / max(1e-9, fixed + MIN_STEPS * per_step))
        repeats = max(1, min(REPEATS, affordable))
        steps = max(MIN_STEPS, min(workload.steps, int((left / repeats - fixed) / per_step)))
        for each, images in _plan(workload, steps, max_pixels, level):
            plan.append((each, images, max(budget_s, 3 * _seconds([(each, images)], workload, rest_s, step_s))))
            best.append(math.inf)
        for turn in range(repeats):
            for index, (each, images, read_s) in enumerate(plan):
                if turn or index > len(SHORT_BATCHES):  # the first requests (1 step, the probe) had their first turn
                    best[index] = min(best[index], timed(each, images, read_s))
    except WorkerError as error:
        member.record_error(error)
        return BenchmarkOutcome(member.name, None, None, str(error))
    cost = CostModel.fit([Observation(images, each, s) for (each, images, _), s in zip(plan, best, strict=True)])
    cost.measured_at = workload.label  # speeds are shown at the size asked for (the fit covers every size)
    member.cost = cost
    member.calibrated = True
    record = BenchmarkRecord(
        when=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        model=model,
        ipm=round(cost.ipm(), 3),
        seconds=round(time.monotonic() - started, 2),
    )
    return BenchmarkOutcome(member.name, cost, record)


def _plan(workload: Workload, steps: int, max_pixels: int | None, level: int = 2) -> list[tuple[Workload, int]]:
    """The timed requests after the 1-step ones at the asked size: 1, 2 and 4 images at `steps`; at level 2 one
    image at each probe size; at levels 1 and 2, unless asked for, a 64x64 image at one step and at the asked steps,
    which costs little anywhere and shows the per-request costs (those of each step too) almost alone."""
    plan = [(Workload(workload.width, workload.height, steps), images) for images in TIMED_BATCHES]
    if level >= 2:
        sizes = probe_sizes(workload, max_pixels)
        plan += [(Workload(width, height, steps), 1) for width, height in sizes]
    if level >= 1 and (workload.width, workload.height) != (FLOOR, FLOOR):
        floor = [(Workload(FLOOR, FLOOR, 1), 1), (Workload(FLOOR, FLOOR, max(steps, workload.steps)), 1)]
        plan += [entry for entry in floor if entry not in plan]
    return plan


def _seconds(plan: list[tuple[Workload, int]], asked: Workload, rest_s: float, step_s: float) -> float:
    """What a plan should take, from one image's cost at the asked size apart from its steps and each step's, both
    scaled by pixels (a request's own overhead is in `rest_s`, so small images are over-counted, never under)."""
    total = 0.0
    for each, images in plan:
        pixels = images * each.width * each.height / (asked.width * asked.height)  # in images of the asked size
        total += max(1.0, pixels) * rest_s + pixels * each.steps * step_s
    return total


def probe_sizes(workload: Workload, max_pixels: int | None = None) -> list[tuple[int, int]]:
    """Two other resolutions that the webui allows (sides >= 64, multiples of 8), a larger one only up to a
    megapixel (or the worker's max_pixels), so that the terms growing with the pixels, linearly and faster, can be
    told apart across the sizes people change to: 128x128 -> 64x64, 256x256; 512x512 -> 256x256, 768x768;
    1024x1024 -> 512x512, 256x256."""
    limit = min(PROBE_MAX_PIXELS, max_pixels or PROBE_MAX_PIXELS)
    sizes: list[tuple[int, int]] = []
    for factor in PROBE_FACTORS:
        size = (8 * round(workload.width * factor / 8), 8 * round(workload.height * factor / 8))
        ceiling = DOUBLE_MAX_PIXELS if factor > 1.5 else limit
        usable = min(size) >= FLOOR and (factor < 1 or size[0] * size[1] <= min(limit, ceiling))
        if usable and size != (workload.width, workload.height) and size not in sizes:
            sizes.append(size)
    return sizes[:2]


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
        return time_request(member, workload, images, model, read_s, request)
    except WorkerTimeout as error:
        try:
            member.client.interrupt()  # nothing keeps rendering for a benchmark that gave up
        except WorkerError as ignored:
            logger.debug("interrupt after a benchmark timeout failed: %s", ignored)
        raise WorkerTimeout(
            member.name,
            f"{images} image(s) at {workload.label} did not finish within {read_s:.0f} s ({error.detail}); "
            f"interrupted on the worker. Try {_smaller(asked)}a longer --budget "
            f"(now {budget_s:g} s).",
        ) from None


def _smaller(workload: Workload) -> str:
    """Advice to benchmark at a smaller size, ending in "or " (nothing at the smallest size the webui allows)."""
    if workload.width * workload.height <= FLOOR**2:
        return ""
    return f"a smaller size (--width {max(FLOOR, workload.width // 2)} --height {max(FLOOR, workload.height // 2)}) or "


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
