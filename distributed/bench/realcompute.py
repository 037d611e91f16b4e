"""The cost model on real compute: a headless worker running the tiny model with no emulation (one torch thread) is
benchmarked once, at one workload, the way `python -m distributed benchmark` does it; then requests after a change of
resolution and after a change of steps are timed and compared with what the model predicted before they ran.

Emulated workers take the time the cost model's own formula says, so their prediction error proves little; this
one's time is the model's real work: text encoder, UNet steps, attention, VAE decode, PNG encoding, HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distributed.bench.measures import PredictionRow
from distributed.cli.localfleet import LocalWorker
from distributed.compat import validate
from distributed.engine.benchmark import benchmark_member, time_request
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import TERMS, CostModel, Workload
from distributed.engine.fleet import Fleet

REAL = "real compute (tiny model, no emulation)"
ASKED = Workload(128, 128, 12)  # what the worker is benchmarked at
CHANGES = {
    "resolution 128->64": Workload(64, 64, 12),
    "resolution 128->256": Workload(256, 256, 12),
    "steps 12->4": Workload(128, 128, 4),
    "steps 12->30": Workload(128, 128, 30),
    "both: 64x64, 4 steps": Workload(64, 64, 4),  # where the per-request costs weigh most
    "both: 64x64, 30 steps": Workload(64, 64, 30),
}
IMAGES = 2  # per timed request after a change
REPEATS = 5  # each timed request this many times, the fastest kept (a 0.1 s request varies by 20% here)


@dataclass
class RealCompute:
    rows: list[PredictionRow]
    asked: str
    terms: dict[str, float]  # the fitted cost model
    # the benchmark's own requests: workload, images, measured seconds, the fitted model's seconds
    timings: list[tuple[str, int, float, float]] = field(default_factory=list)
    benchmark_s: float = 0.0


BUDGET_S = 20.0  # the benchmark's --budget here: at 10 s this CPU's noise leaves it as few as 4 timed steps


def real_compute_errors(logs: Path, budget_s: float = BUDGET_S) -> RealCompute:
    """Benchmark a real tiny-model worker at ASKED within `budget_s`, then time IMAGES images after each change."""
    with LocalWorker("tiny-real", threads=1, log_path=logs / "real-compute.log") as worker:
        fleet = Fleet(validate(FleetConfig, {"workers": [{"name": "tiny-real", "url": worker.url}]}))
        try:
            member = next(iter(fleet))
            # the process's first render (lazy initialisation) is not its speed
            time_request(member, Workload(64, 64, 1), 1, None, 600, {})
            outcome = benchmark_member(member, ASKED, budget_s)
            if outcome.cost is None or outcome.record is None:
                raise RuntimeError(f"benchmark failed: {outcome.error}")
            model = outcome.cost.copy()  # frozen: no request below teaches it anything
            actual = {change: float("inf") for change in CHANGES}
            for _ in range(REPEATS):
                for change, workload in CHANGES.items():
                    actual[change] = min(actual[change], time_request(member, workload, IMAGES, None, 600, {}))
        finally:
            fleet.close()
    # the first cost model, fitted as its benchmark did: 1, 2 and 4 images at the asked size, one step count
    timed = [o for o in outcome.cost.observations if o.workload.width == ASKED.width and o.workload.steps > 1]
    baseline = CostModel.fit([o for o in timed if o.workload.height == ASKED.height])
    rows = [
        PredictionRow(change, "tiny", model.predict(IMAGES, each), actual[change], REAL, baseline.predict(IMAGES, each))
        for change, each in CHANGES.items()
    ]
    timings = [
        (o.workload.label, o.images, o.seconds, model.predict(o.images, o.workload)) for o in outcome.cost.observations
    ]
    terms = dict(zip(TERMS, model.terms, strict=True))
    return RealCompute(rows, ASKED.label, terms, timings, outcome.record.seconds)
