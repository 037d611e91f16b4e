"""The worker's job queue and the state `/sdapi/v1/progress` reports, like A1111's `shared.state`.

One generation runs at a time; requests wait their turn in arrival order (a ticket lock, since a plain Lock does
not promise order). Interrupt and skip wake a waiting step at once through an Event, so nothing polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

REFERENCE_PIXEL_STEPS = 64 * 64 * 4  # the --emulate-ipm reference workload: 64x64 at 4 steps


class FifoLock:
    """A lock granted strictly in the order it was asked for."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return self._next_ticket - self._serving

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


@dataclass
class _Snapshot:
    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    time_start: float = 0.0
    job_timestamp: str = "0"
    interrupted: bool = False
    skipped: bool = False


class JobState:
    """What the current job is doing; written by the generating thread, read by progress requests."""

    def __init__(self, emulate_ipm: float | None = None) -> None:
        self._lock = threading.Lock()
        self._state = _Snapshot()
        self._wake = threading.Event()
        self.emulate_ipm = emulate_ipm
        self._batch_start = 0.0
        self._batch_seconds = 0.0

    # -- called by the generating thread -------------------------------------------------------------------------
    def begin(self, job: str, batches: int) -> None:
        with self._lock:
            now = time.time()
            self._state = _Snapshot(
                job=job, job_count=batches, time_start=now, job_timestamp=time.strftime("%Y%m%d%H%M%S")
            )
            self._wake.clear()

    def begin_batch(self, number: int, images: int, width: int, height: int, steps: int) -> None:
        with self._lock:
            self._state.job_no = number
            self._state.sampling_step = 0
            self._state.sampling_steps = steps
            self._state.skipped = False
            if not self._state.interrupted:
                self._wake.clear()
        self._batch_start = time.monotonic()
        self._batch_seconds = 0.0
        if self.emulate_ipm:
            work = images * width * height * steps / REFERENCE_PIXEL_STEPS
            self._batch_seconds = work * 60.0 / self.emulate_ipm

    def after_step(self, done: int, total: int) -> bool:
        """Record a finished step; with --emulate-ipm, wait out the emulated GPU time. True: stop this batch."""
        with self._lock:
            self._state.sampling_step = done
            self._state.sampling_steps = total
        if self._batch_seconds > 0 and total > 0:
            deadline = self._batch_start + self._batch_seconds * done / total
            remaining = deadline - time.monotonic()
            if remaining > 0:
                self._wake.wait(remaining)
        return self.should_stop_batch

    def end(self) -> None:
        with self._lock:
            self._state = _Snapshot()
            self._wake.clear()

    @property
    def interrupted(self) -> bool:
        with self._lock:
            return self._state.interrupted

    @property
    def should_stop_batch(self) -> bool:
        with self._lock:
            return self._state.interrupted or self._state.skipped

    # -- called by request handlers ------------------------------------------------------------------------------
    def interrupt(self) -> None:
        with self._lock:
            if self._state.job_count:
                self._state.interrupted = True
                self._wake.set()

    def skip(self) -> None:
        with self._lock:
            if self._state.job_count:
                self._state.skipped = True
                self._wake.set()

    def progress(self, queued: int) -> dict[str, Any]:
        """The /sdapi/v1/progress answer, computed the way A1111's progressapi does."""
        with self._lock:
            s = self._state
            state = {
                "skipped": s.skipped,
                "interrupted": s.interrupted,
                "stopping_generation": False,
                "job": s.job,
                "job_count": s.job_count,
                "job_timestamp": s.job_timestamp,
                "job_no": s.job_no,
                "sampling_step": s.sampling_step,
                "sampling_steps": s.sampling_steps,
                "queued": queued,
            }
            if s.job_count == 0:
                return {
                    "progress": 0.0,
                    "eta_relative": 0.0,
                    "state": state,
                    "current_image": None,
                    "textinfo": None,
                    "current_task": None,
                }
            progress = 0.01 + s.job_no / s.job_count
            if s.sampling_steps > 0:
                progress += 1 / s.job_count * s.sampling_step / s.sampling_steps
            elapsed = time.time() - s.time_start
            eta_relative = elapsed / progress - elapsed
            return {
                "progress": min(progress, 1.0),
                "eta_relative": eta_relative,
                "state": state,
                "current_image": None,
                "textinfo": None,
                "current_task": s.job,
            }
