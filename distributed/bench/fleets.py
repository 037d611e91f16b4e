"""Local fleets at emulated speeds, and the ways to split a batch over them that the benchmark compares."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from distributed.cli.localfleet import LocalWorker, start_all
from distributed.compat import validate
from distributed.engine.benchmark import benchmark_all
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import CostModel, Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet, FleetMember
from distributed.engine.jobs import JobResult, JobSpec, check_response
from distributed.engine.scheduler import Chunk

WORKLOAD = Workload(64, 64, 4)
PAYLOAD = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler a"}
MAX_REQUEST = 64
TIMEOUTS = {"connect_s": 3.0, "probe_s": 2.0, "chunk_min_s": 15.0, "no_worker_s": 10.0}


@dataclass(frozen=True)
class FleetShape:
    name: str
    speeds: dict[str, float]  # worker name -> emulated images per minute at 64x64, 4 steps

    @property
    def label(self) -> str:
        base = min(self.speeds.values())
        return ":".join(f"{v / base:g}" for v in self.speeds.values())


SHAPES = (
    FleetShape("equal", {"e1": 120.0, "e2": 120.0, "e3": 120.0}),
    FleetShape("unequal", {"fast": 240.0, "medium": 96.0, "slow": 48.0}),
    FleetShape("extreme", {"big": 240.0, "tiny": 24.0}),
)


class LocalFleet:
    """The shape's workers as processes, a Fleet over them, and their benchmarked cost models."""

    def __init__(self, shape: FleetShape, logs: Path) -> None:
        self.shape = shape
        self.workers = {
            name: LocalWorker(name, emulate_ipm=ipm, threads=1, log_path=logs / f"{shape.name}-{name}.log")
            for name, ipm in shape.speeds.items()
        }
        self.costs: dict[str, CostModel] = {}
        self.benchmark_seconds: dict[str, float] = {}

    def __enter__(self) -> LocalFleet:
        start_all(list(self.workers.values()))
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers.values():
            worker.stop()

    def fleet(self, names: list[str] | None = None, calibrated: bool = True) -> Fleet:
        chosen = [n for n in self.workers if names is None or n in names]
        data = {
            "workers": [{"name": n, "url": self.workers[n].url} for n in chosen],
            "options": {"timeouts": TIMEOUTS},
        }
        fleet = Fleet(validate(FleetConfig, data))
        if calibrated:
            for member in fleet:
                member.cost = self.costs[member.name].copy()
                member.calibrated = True
        return fleet

    def calibrate(self, budget_s: float = 3.0) -> None:
        fleet = self.fleet(calibrated=False)
        for outcome in benchmark_all(list(fleet), WORKLOAD, budget_s):
            if outcome.cost is None or outcome.record is None:
                raise RuntimeError(f"benchmark failed: {outcome.error}")
            self.costs[outcome.worker] = outcome.cost
            self.benchmark_seconds[outcome.worker] = outcome.record.seconds
        fleet.close()

    def rate(self, name: str) -> float:
        """Standalone images per second (the fitted per-image cost, overhead left out: the strictest ideal)."""
        return 1.0 / self.costs[name].per_image(WORKLOAD)

    def ideal(self, images: int, names: list[str] | None = None) -> float:
        return images / sum(self.rate(n) for n in self.workers if names is None or n in names)


def spec(images: int, seed: int = 1000) -> JobSpec:
    return JobSpec("txt2img", dict(PAYLOAD), images, seed, seed, workload=WORKLOAD)


def run_ours(local: LocalFleet, images: int, names: list[str] | None = None) -> JobResult:
    fleet = local.fleet(names)
    try:
        return Job(fleet, spec(images)).run()
    finally:
        fleet.close()


def run_static(local: LocalFleet, shares: dict[str, int], images: int) -> float:
    """A fixed split, one request per worker, all at once, no re-planning (what simpler tools do)."""
    fleet = local.fleet(list(shares))
    job_spec = spec(images)
    chunks, start = [], 0
    for name, count in shares.items():
        if count:
            chunks.append(Chunk(name, start, count))
            start += count
    members = {m.name: m for m in fleet}

    def one(chunk: Chunk) -> int:
        member: FleetMember = members[chunk.worker]
        made = 0
        for start in range(chunk.start, chunk.start + chunk.count, MAX_REQUEST):  # a worker takes 64 at most
            part = Chunk(chunk.worker, start, min(MAX_REQUEST, chunk.start + chunk.count - start))
            response = member.client.generate("txt2img", job_spec.chunk_payload(part), read_s=600)
            made += len(check_response(job_spec, part, response, partial=False))
        return made

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        made = sum(pool.map(one, chunks))
    elapsed = time.monotonic() - started
    fleet.close()
    if made != images:
        raise RuntimeError(f"baseline made {made} of {images} images")
    return elapsed


def equal_shares(names: list[str], images: int) -> dict[str, int]:
    base, rest = divmod(images, len(names))
    return {name: base + (1 if i < rest else 0) for i, name in enumerate(names)}


def proportional_shares(local: LocalFleet, images: int) -> dict[str, int]:
    """Shares by benchmarked speed, largest remainders first (the prior art's static split)."""
    rates = {n: local.rate(n) for n in local.workers}
    total = sum(rates.values())
    exact = {n: images * r / total for n, r in rates.items()}
    shares = {n: int(v) for n, v in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - shares[n], reverse=True)[: images - sum(shares.values())]:
        shares[name] += 1
    return shares
