"""The dispatcher's bookkeeping types: event kinds, the retry and deadline policy, chunks in flight, and each
member's part in one job."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from distributed.engine.chunkbook import BookedChunk
from distributed.engine.config import Timeouts
from distributed.engine.fleet import FleetMember
from distributed.engine.scheduler import Chunk


class EventKind(str, Enum):
    STARTED = "started"  # a chunk went to a worker (or the master took one)
    DONE = "done"  # a chunk's images came back
    FAILED = "failed"  # a chunk was lost (its images are re-queued)
    PROGRESS = "progress"  # a worker's sampling step, while it renders
    STATE = "state"  # a worker came back online

    def __str__(self) -> str:  # f"{kind}" reads "done", as the plain strings these replace did
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class ProgressEvent:
    worker: str
    kind: EventKind
    done: int  # images of the job finished so far (all workers, the master included)
    total: int
    worker_done: int = 0
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    detail: str = ""


EventSink = Callable[[ProgressEvent], None]
Admit = Callable[[FleetMember], dict[str, Any]]  # a worker's preparation for a job: what its requests must carry


@dataclass(frozen=True)
class RetryPolicy:
    """Every deadline and retry rule of a job, in one value."""

    # from the fleet's Timeouts (workers.json holds their defaults): see from_timeouts
    chunk_min_s: float  # the shortest deadline any chunk gets
    chunk_factor: float  # deadline = chunk_min_s + factor x predicted (+ its wait in a busy worker's queue)
    no_worker_s: float  # how long pending images wait for an offline worker to return
    read_factor: float = 10.0  # an HTTP read may outlast a chunk's deadline by this much: the deadline grows
    missed_progress_limit: int = 2  # unanswered progress calls in a row before a busy worker counts as dead
    misses_to_hold_out: int = 2  # deadlines a worker may miss in one job before it sits the job out
    max_bad_workers: int = 3  # distinct workers failing one image with an HTTP error or garbage: the request is bad
    lane_grace_factor: float = 10.0  # the master's own chunk may run this many times its prediction at most
    interrupt_grace_s: float = 0.8  # how long an interrupted job waits for the images already made
    progress_tick_s: float = 0.5  # how often busy workers are asked for their progress
    admit_grace_s: float = 1.0  # how long the first plan waits for workers that were online to answer

    @classmethod
    def from_timeouts(cls, timeouts: Timeouts) -> RetryPolicy:
        return cls(timeouts.chunk_min_s, timeouts.chunk_factor, timeouts.no_worker_s)

    def deadline_s(self, predicted_s: float, retries: int) -> float:
        """A chunk's deadline; each deadline its images missed before doubles it."""
        return (self.chunk_min_s + self.chunk_factor * predicted_s) * float(2**retries)

    def read_timeout_s(self, deadline_s: float) -> float:
        return deadline_s * self.read_factor

    def extended(self, deadline: float, now: float) -> float:
        """A worker that shows progress keeps at least chunk_min_s from now: slow is not dead."""
        return max(deadline, now + self.chunk_min_s)

    def holds_out(self, deadline_misses: int) -> bool:
        return deadline_misses >= self.misses_to_hold_out

    def request_is_bad(self, failed_on: int, members: int) -> bool:
        """Every worker (up to max_bad_workers) failed the same image with an HTTP error or garbage."""
        return failed_on >= min(self.max_bad_workers, members)

    def lane_overdue(self, running_s: float, predicted_s: float) -> bool:
        return running_s > self.chunk_min_s + self.lane_grace_factor * predicted_s


@dataclass
class InFlight:
    member: FleetMember
    booked: BookedChunk
    sent_at: float
    deadline: float
    predicted_end: float
    observe: bool  # the worker was idle when sent, so the time is its own speed
    missed_progress: int = 0
    marker: tuple[object, ...] | None = None  # the worker's last progress (job, batch, step): a change is progress

    @property
    def chunk(self) -> Chunk:
        return self.booked.chunk


@dataclass
class MemberJobState:
    excluded: str | None = None  # why this worker takes no part in this job (auth, model)
    admitted: bool = False  # answered this job's admission call (preparation and availability)
    asking: bool = False  # an admission call is under way
    failed_admission: bool = False  # its admission failure is already in the job's failures
    deadline_misses: int = 0
    next_probe_at: float | None = None
    busy_until: float | None = None  # busy with someone else's work until then, as its progress shows (None: free)


@dataclass
class Extras:
    """Opt-in extra images for idle time: planned once, each sent only to a worker that would otherwise idle."""

    planned: bool = False
    chunks: dict[str, Chunk] = field(default_factory=dict)  # by worker
    until: float = 0.0  # an extra must finish by then (the plan's makespan)


class JobControl:
    """What other threads do to a running job: interrupt, skip, or wake its loop (the master's lane reporting).
    The loop re-arms `wake` before it looks at the job's state and waits on it among its calls, so a request made
    at any moment reaches it at once, without polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake: Future[None] = Future()
        self.interrupted = False
        self._skip = False

    def rearm(self) -> None:
        with self._lock:
            if self._wake.done():
                self._wake = Future()

    @property
    def wake(self) -> Future[None]:
        with self._lock:
            return self._wake

    def poke(self) -> None:
        with self._lock:
            if not self._wake.done():
                self._wake.set_result(None)

    def interrupt(self) -> None:
        self.interrupted = True
        self.poke()

    def skip(self) -> None:
        self._skip = True
        self.poke()

    def take_skip(self) -> bool:
        """True once per skip request."""
        with self._lock:
            asked, self._skip = self._skip, False
            return asked
