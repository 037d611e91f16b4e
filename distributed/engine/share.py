"""Workers shared by concurrent jobs (the `serve` gateway): one chunk per worker at a time, handed out fairly.

Each job runs its own dispatcher loop and plans as usual, seeing another job's chunk on a worker as that worker
being busy until the chunk's predicted end. Before it sends, a job claims the worker here. The fairness rule: a
free worker goes to the job that wants it (its latest plan gives that worker images) and holds the fewest workers
right now, the earliest arrival first among equals. So a job that has just arrived (holding nothing) takes the next
worker its plan wants, a 1-image job is never stuck behind a 96-image one, and two equal jobs sent together share
the fleet and finish together. A refused job is woken when something changes (a release, another job's wants), so
no worker idles while a job that wants it waits.

Each job plans a worker that k jobs want at 1/k of its speed (it gets about every k-th chunk), so the plans of jobs
running together split the fleet between them instead of each counting on all of it; otherwise one job's slow workers
would be left holding images planned for a fast worker that the rule keeps giving to the other job.

Chunks are also cut to at most `slice_s` of a worker's predicted time, so that a job arriving in the middle of a long
one waits at most about that long for the worker it wants.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RECENT_S = 2.0  # a worker used by a job this recently shows that job in its progress, not someone else's work


@dataclass
class _Entry:
    arrival: int
    poke: Callable[[], None]
    wants: frozenset[str] = frozenset()
    held: set[str] = field(default_factory=set)


class FleetShare:
    def __init__(self, slice_s: float | None = 1.0) -> None:
        self.slice_s = slice_s
        self._lock = threading.Lock()
        self._jobs: dict[int, _Entry] = {}
        self._holders: dict[str, tuple[int, float]] = {}  # worker -> (job ticket, predicted end on the monotonic clock)
        self._released: dict[str, float] = {}  # worker -> when its last chunk ended (monotonic)
        self._tickets = itertools.count(1)

    def join(self, poke: Callable[[], None]) -> int:
        """A job enters; `poke` wakes its loop. Returns the job's ticket."""
        with self._lock:
            ticket = next(self._tickets)
            self._jobs[ticket] = _Entry(ticket, poke)
            return ticket

    def leave(self, ticket: int) -> None:
        """A job ended: what it held is free and nobody waits on its wants."""
        with self._lock:
            entry = self._jobs.pop(ticket, None)
            if entry is None:
                return
            for name in entry.held:
                self._holders.pop(name, None)
                self._released[name] = time.monotonic()
            others = list(self._jobs.values())
        for other in others:
            other.poke()

    def want(self, ticket: int, names: set[str]) -> None:
        """The workers this job's latest plan gives images to; a change wakes the others (a worker one of them was
        refused may now be theirs)."""
        wanted = frozenset(names)
        with self._lock:
            entry = self._jobs.get(ticket)
            if entry is None or entry.wants == wanted:
                return
            entry.wants = wanted
            others = [e for t, e in self._jobs.items() if t != ticket]
        for other in others:
            other.poke()

    def contenders(self, name: str) -> int:
        """How many jobs' plans want this worker now (at least 1): a job plans it at that fraction of its speed, as
        the rule hands it to them in turn."""
        with self._lock:
            return max(1, sum(1 for entry in self._jobs.values() if name in entry.wants))

    def busy_until(self, ticket: int, name: str) -> float | None:
        """When another job's chunk on this worker is predicted to end (monotonic), or None if no other job holds it."""
        with self._lock:
            holder = self._holders.get(name)
            if holder is None or holder[0] == ticket:
                return None
            return holder[1]

    def claim(self, ticket: int, name: str, until: float) -> bool:
        """Take the worker for one chunk predicted to end at `until` (monotonic), if it is free and this job is next
        in the fairness rule; otherwise the job that is next is woken to take it."""
        with self._lock:
            if name in self._holders:
                return False
            claimant = self._jobs.get(ticket)
            if claimant is None:
                return False
            wanting = [e for e in self._jobs.values() if name in e.wants or e is claimant]
            best = min(wanting, key=lambda e: (len(e.held), e.arrival))
            if best is not claimant:
                poke = best.poke
            else:
                claimant.held.add(name)
                self._holders[name] = (ticket, until)
                return True
        poke()
        return False

    def release(self, ticket: int, name: str) -> None:
        """The job's chunk on this worker ended (done, failed, or interrupted on the worker)."""
        with self._lock:
            holder = self._holders.get(name)
            if holder is None or holder[0] != ticket:
                return
            del self._holders[name]
            self._released[name] = time.monotonic()
            entry = self._jobs.get(ticket)
            if entry is not None:
                entry.held.discard(name)
            others = list(self._jobs.values())
        for other in others:
            other.poke()

    def used_lately(self, name: str) -> bool:
        """Held by a job now or within RECENT_S: what the worker's progress shows is the gateway's own work."""
        with self._lock:
            if name in self._holders:
                return True
            return time.monotonic() - self._released.get(name, -RECENT_S * 2) < RECENT_S

    def holders(self) -> dict[str, int]:
        """Which job ticket holds each busy worker (for status views)."""
        with self._lock:
            return {name: holder[0] for name, holder in self._holders.items()}
