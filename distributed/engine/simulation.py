"""A job on simulated time: fake workers of chosen speeds and faults behind the real dispatcher, run in milliseconds.

`SimRuntime` is a Runtime whose clock moves only when the job waits: each call a fake worker answers says how many
simulated seconds it takes (`Delayed`), and waiting jumps the clock to the next answer or timeout. The dispatcher,
the planner, the cost model and the chunk book run unchanged, so a change of strategy is checked in unit tests
without the benchmark. Only `generate` takes simulated time; the other calls answer at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

from distributed.engine.client import GenerationResponse, WorkerClient
from distributed.engine.config import FleetConfig, WorkerConfig
from distributed.engine.costmodel import CostModel, Workload
from distributed.engine.fleet import Fleet
from distributed.errors import WorkerHTTPError, WorkerUnreachable


@dataclass(frozen=True)
class Delayed:
    value: object  # the answer, or the exception the call ends with
    seconds: float


class SimulationStalled(RuntimeError):
    """The job waited without a timeout for calls that never answer: it would hang for real."""


class SimRuntime:
    def __init__(self) -> None:
        self.t = 0.0
        self._due: dict[Future[Any], tuple[float, object]] = {}

    def now(self) -> float:
        return self.t

    def submit(self, call: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            value = call(*args)
        except Exception as error:  # noqa: BLE001 - a future carries any exception, as a thread pool's does
            value = error
        delayed = value if isinstance(value, Delayed) else Delayed(value, 0.0)
        self._due[future] = (self.t + delayed.seconds, delayed.value)
        return future

    def wait(self, futures: Iterable[Future[Any]], timeout: float) -> set[Future[Any]]:
        waiting = list(futures)
        done = {f for f in waiting if f.done()}
        if done:
            return done
        horizon = self.t + max(0.0, timeout)
        first = min((self._due[f][0] for f in waiting if f in self._due), default=math.inf)
        if first > horizon:
            if math.isinf(horizon):
                raise SimulationStalled("the job waits for ever")
            self.t = horizon
            return set()
        self.t = max(self.t, first)
        for future in waiting:
            if future in self._due and self._due[future][0] <= self.t:
                _, value = self._due.pop(future)
                if isinstance(value, BaseException):
                    future.set_exception(value)
                else:
                    future.set_result(value)
                done.add(future)
        return done

    def close(self) -> None:
        self._due.clear()


@dataclass
class FakeWorker:
    """A worker as the dispatcher sees it through its client: a speed and, if wanted, a fault.

    `dies_at`: from that simulated moment every call fails as unreachable (a chunk it holds is lost then).
    `hangs`: renders without end and shows no progress (a frozen GPU). `slowdown`: takes that many times its speed
    while showing progress (slow, not dead). `refuses`: answers 422 naming that field (it cannot render the request)."""

    name: str
    runtime: SimRuntime
    overhead_s: float
    per_image_s: float
    dies_at: float = math.inf
    hangs: bool = False
    slowdown: float = 1.0
    refuses: str = ""  # answers every generation with HTTP 422 naming this field
    calls: list[str] = field(default_factory=list)
    _job: tuple[float, float] | None = None  # the chunk it renders: started, ends

    def _dead(self) -> bool:
        return self.runtime.now() >= self.dies_at

    def generate(self, kind: str, payload: dict[str, Any], read_s: float) -> Delayed:
        self.calls.append("generate")
        now, count = self.runtime.now(), int(payload["batch_size"])
        if self._dead():
            return Delayed(WorkerUnreachable(self.name, "connection refused"), 0.0)
        if self.refuses:
            message = f"HTTP 422: {self.refuses}: the headless worker renders only with its default"
            return Delayed(WorkerHTTPError(self.name, message, 422), 0.05)
        seconds = math.inf if self.hangs else (self.overhead_s + count * self.per_image_s) * self.slowdown
        self._job = (now, now + seconds)
        if now + seconds >= self.dies_at:
            return Delayed(WorkerUnreachable(self.name, "connection reset"), self.dies_at - now)
        seed, subseed = int(payload["seed"]), int(payload["subseed"])
        variation = float(payload.get("subseed_strength") or 0) != 0
        info = {
            "all_seeds": [seed + (0 if variation else k) for k in range(count)],
            "all_subseeds": [subseed + k for k in range(count)],
            "infotexts": [f"{self.name} image {k}" for k in range(count)],
        }
        images = [f"{self.name}:{seed}:{k}".encode() for k in range(count)]
        return Delayed(GenerationResponse(images, info), seconds)

    def progress(self) -> dict[str, Any]:
        self.calls.append("progress")
        if self._dead():
            raise WorkerUnreachable(self.name, "connection refused")
        now = self.runtime.now()
        if self._job is None or now >= self._job[1]:
            return {"progress": 0.0, "eta_relative": 0.0, "state": {"job_count": 0}}
        started, ends = self._job
        step = 0 if self.hangs else int((now - started) * 10)  # a frozen worker shows no step
        return {"progress": 0.5, "eta_relative": ends - now, "state": {"job_count": 1, "sampling_step": step}}

    def interrupt(self) -> None:
        self.calls.append("interrupt")
        self._job = None

    def skip(self) -> None:
        self.calls.append("skip")


def simulated_fleet(workers: list[FakeWorker], measured_at: Workload | None = None) -> Fleet:
    """A Fleet whose members talk to the fake workers; with `measured_at`, their cost models already know their
    speed at that workload (as after a benchmark); without it they start unmeasured."""
    config = FleetConfig(workers=[WorkerConfig(name=w.name, url=f"http://{w.name}.invalid") for w in workers])
    fleet = Fleet(config)
    for worker in workers:
        member = fleet.members[worker.name]
        member.client.close()
        member.client = cast(WorkerClient, worker)
        if measured_at is not None:
            member.cost = CostModel(worker.overhead_s, worker.per_image_s / measured_at.units)
            member.calibrated = True
    return fleet
