"""The clients' jobs over one shared fleet: a bounded set of jobs running at once, each with its own dispatcher
loop, sharing the workers through a FleetShare (its docstring states the fairness rule). A job's progress is kept
from its events for A1111's /progress; interrupt and skip reach a caller's own jobs only."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobResult, JobSpec
from distributed.engine.jobstate import Admit, EventKind, ProgressEvent
from distributed.engine.share import FleetShare

UNKNOWN_WAIT_S = 5  # Retry-After when no running job can tell how long it still takes


class QueueFull(RuntimeError):
    """HTTP 503: the gateway holds --max-queue jobs; `retry_after_s` is when one is predicted to end."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"the queue is full ({limit} jobs); retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class QueuedJob:
    id: int
    caller: str
    kind: str
    spec: JobSpec
    job: Job = field(init=False)  # made right after, with this record's on_event
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    steps: dict[str, tuple[int, int]] = field(default_factory=dict)  # worker -> (step, steps) of its chunk
    workers: set[str] = field(default_factory=set)  # those rendering a chunk of it now

    def on_event(self, event: ProgressEvent) -> None:
        self.done = event.done
        if event.kind == EventKind.STARTED:
            self.workers.add(event.worker)
            self.steps[event.worker] = (0, self.spec.workload.steps)
        elif event.kind == EventKind.PROGRESS:
            self.steps[event.worker] = (event.step, event.steps or self.spec.workload.steps)
        elif event.kind in (EventKind.DONE, EventKind.FAILED):
            self.workers.discard(event.worker)
            self.steps.pop(event.worker, None)

    @property
    def fraction(self) -> float:
        partial = sum(step / steps for step, steps in self.steps.values() if steps) / max(1, len(self.steps) or 1)
        return min(1.0, (self.done + (partial if self.steps else 0.0)) / max(1, self.spec.images))

    def eta_s(self) -> float | None:
        fraction, elapsed = self.fraction, time.monotonic() - self.started
        return elapsed * (1 - fraction) / fraction if fraction > 0 else None

    def progress(self) -> dict[str, Any]:
        """A1111's /progress answer for this job."""
        step, steps = max(self.steps.values(), default=(0, self.spec.workload.steps))
        return {
            "progress": round(self.fraction, 4),
            "eta_relative": round(self.eta_s() or 0.0, 2),
            "state": {
                "skipped": False,
                "interrupted": self.job.control.interrupted,
                "job": f"distributed-{self.id}",
                "job_count": 1,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(self.created)),
                "job_no": 0,
                "sampling_step": step,
                "sampling_steps": steps,
            },
            "current_image": None,
            "textinfo": f"{self.done}/{self.spec.images} images; rendering on: {', '.join(sorted(self.workers))}",
        }

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "images": self.spec.images,
            "done": self.done,
            "workers": sorted(self.workers),
            "running_s": round(time.monotonic() - self.started, 1),
            "eta_s": None if (eta := self.eta_s()) is None else round(eta, 1),
        }


IDLE_PROGRESS: dict[str, Any] = {
    "progress": 0.0,
    "eta_relative": 0.0,
    "state": {
        "skipped": False,
        "interrupted": False,
        "job": "",
        "job_count": 0,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    },
    "current_image": None,
    "textinfo": None,
}


class JobQueue:
    def __init__(self, fleet: Fleet, max_queue: int, slice_s: float | None) -> None:
        self.fleet = fleet
        self.max_queue = max_queue
        self.share = FleetShare(slice_s)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[int, QueuedJob] = {}
        self._ids = itertools.count(1)
        self.finished = 0

    def submit(self, caller: str, spec: JobSpec, admit: Admit | None) -> QueuedJob:
        """A new job, or QueueFull. The job joins the share at once; `run` must follow (it leaves the share)."""
        with self._lock:
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(self.max_queue, self._retry_after_s())
            number = next(self._ids)
            queued = QueuedJob(number, caller, spec.kind, spec)
            queued.job = Job(self.fleet, spec, on_event=queued.on_event, admit=admit, share=self.share)
            self._jobs[number] = queued
            self._changed.notify_all()
            return queued

    def run(self, queued: QueuedJob) -> JobResult:
        try:
            return queued.job.run()
        finally:
            with self._lock:
                self._jobs.pop(queued.id, None)
                self.finished += 1
                self._changed.notify_all()

    def wait_count(self, test: Callable[[int], bool], timeout_s: float) -> bool:
        """Until the number of jobs held passes `test` (True) or the timeout passes (False)."""
        with self._lock:
            return self._changed.wait_for(lambda: test(len(self._jobs)), timeout_s)

    def wait_empty(self, timeout_s: float) -> bool:
        """Until no job is left: for a clean shutdown, and for tests."""
        return self.wait_count(lambda count: count == 0, timeout_s)

    def jobs(self, caller: str | None = None) -> list[QueuedJob]:
        with self._lock:
            return [j for j in self._jobs.values() if caller is None or j.caller == caller]

    def _retry_after_s(self) -> int:
        etas = [eta for job in self._jobs.values() if (eta := job.eta_s()) is not None]
        return max(1, math.ceil(min(etas))) if etas else UNKNOWN_WAIT_S
