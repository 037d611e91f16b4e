"""The dispatcher's bookkeeping types: progress events, chunks in flight, and each member's part in one job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributed.engine.fleet import FleetMember
from distributed.engine.scheduler import Chunk

PROGRESS_TICK_S = 0.5
INTERRUPT_GRACE_S = 0.8  # how long an interrupted job waits for the images already made
MISSED_PROGRESS_LIMIT = 2  # unanswered progress calls in a row before a busy worker counts as dead
MAX_BAD_WORKERS = 3  # distinct workers failing the same image with an HTTP error or garbage: the request is bad
ADMIT_GRACE_S = 1.0  # how long the first plan waits for workers that were online to answer before the job starts
LANE_GRACE_FACTOR = 10.0  # the master's own chunk may run this many times its prediction (+ chunk_min_s) at most
MISSES_TO_HOLD_OUT = 2  # deadlines a worker may miss in one job (each chunk interrupted on it) before it sits out
READ_FACTOR = 10.0  # an HTTP read may outlast a chunk's deadline by this much: the deadline grows with progress


@dataclass
class ProgressEvent:
    worker: str
    kind: str  # "started", "done", "failed", "progress", "state"
    done: int  # images of the job finished so far (all workers, the master included)
    total: int
    worker_done: int = 0
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    detail: str = ""


EventSink = Callable[[ProgressEvent], None]
Admit = Callable[[FleetMember], dict[str, Any]]  # a worker's preparation for a job: what its requests must carry


@dataclass
class InFlight:
    member: FleetMember
    chunk: Chunk
    sent_at: float
    deadline: float
    predicted_end: float
    observe: bool  # the worker was idle when sent, so the time is its own speed
    missed_progress: int = 0
    marker: tuple[object, ...] | None = None  # the worker's last progress (job, batch, step): a change is progress


@dataclass
class MemberJobState:
    excluded: str | None = None  # why this worker takes no part in this job (auth, model)
    admitted: bool = False  # answered this job's admission call (preparation and availability)
    asking: bool = False  # an admission call is under way
    failed_admission: bool = False  # its admission failure is already in the job's failures
    deadline_misses: int = 0
    next_probe_at: float | None = None
