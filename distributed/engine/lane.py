"""The master's own renderer as one more member of a job's fleet.

The webui renders in its own loop and thread; the job's dispatcher plans the master like any worker. They meet
here: the loop asks for its next chunk (waiting, with a deadline, while the fleet works), the dispatcher offers
chunks as its plan gives them to the master, and the loop reports each chunk finished. Images the master renders
never pass through here: they stay in the webui's loop, which merges them with the fleet's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from distributed.engine.costmodel import CostModel
from distributed.engine.scheduler import Chunk

MASTER = "master"


class Ask(str, Enum):
    """What the loop hears when no chunk is offered yet."""

    WAIT = "wait"  # nothing for the master now; ask again (the fleet is working)
    FINISHED = "finished"  # the job is over: merge what arrived


@dataclass(frozen=True)
class Report:
    chunk: Chunk
    seconds: float


class LocalLane:
    """One job's hand-over point between the dispatcher (one thread) and the webui's loop (another)."""

    def __init__(self, cost: CostModel, max_batch: int, reserve: bool = False, name: str = MASTER) -> None:
        self.name = name
        self.cost = cost  # learned from every chunk the master finishes
        self.max_batch = max(1, max_batch)  # never more than the user's batch size
        self.reserve = reserve  # orchestrator-only: the master takes images only when no worker can
        self._changed = threading.Condition()
        self._offer: Chunk | None = None  # handed to the loop, not picked up yet
        self._current: tuple[Chunk, float] | None = None  # offered or being rendered, since when
        self._reports: list[Report] = []
        self._finished = False
        self._poke: Callable[[], None] = lambda: None

    def attach(self, poke: Callable[[], None]) -> None:
        """The dispatcher's wake-up call, made whenever the loop reports a chunk."""
        self._poke = poke

    # -- the webui's loop ----------------------------------------------------------------------------------------
    def ask(self, timeout_s: float) -> Chunk | Ask:
        """The master's next chunk, or WAIT after `timeout_s` without one, or FINISHED when the job is over."""
        with self._changed:
            self._changed.wait_for(lambda: self._offer is not None or self._finished, timeout=timeout_s)
            if self._offer is not None:
                chunk, self._offer = self._offer, None
                self._current = (chunk, time.monotonic())
                return chunk
            return Ask.FINISHED if self._finished else Ask.WAIT

    def take_first(self, chunk: Chunk) -> None:
        """The master starts on `chunk` at once, before the dispatcher runs (its first batch waits for nothing)."""
        with self._changed:
            self._current = (chunk, time.monotonic())

    def done(self) -> None:
        """The loop finished its current chunk."""
        with self._changed:
            if self._current is None:
                return
            chunk, started = self._current
            self._current = None
            self._reports.append(Report(chunk, time.monotonic() - started))
        self._poke()

    # -- the dispatcher ------------------------------------------------------------------------------------------
    @property
    def current(self) -> tuple[Chunk, float] | None:
        """The chunk offered to or rendered by the master and since when; None when it is free for work."""
        with self._changed:
            return self._current

    def offer(self, chunk: Chunk) -> None:
        with self._changed:
            self._offer = chunk
            self._current = (chunk, time.monotonic())
            self._changed.notify_all()

    def reports(self) -> list[Report]:
        with self._changed:
            reports, self._reports = self._reports, []
            return reports

    def finish(self) -> None:
        """No more work: the loop's next ask (or the one waiting now) hears FINISHED."""
        with self._changed:
            self._finished = True
            self._offer = None
            self._changed.notify_all()

    @property
    def finished(self) -> bool:
        with self._changed:
            return self._finished
