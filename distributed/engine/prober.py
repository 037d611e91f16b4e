"""Background health checks of the webui's fleet: every worker at start, a failed one again with backoff.

So the tab never calls a dead worker online, a worker that comes back rejoins without waiting for a job, and no job
waits on a worker known to be down. One thread; it sleeps on an Event until the next check is due or it is stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from distributed.engine.fleet import Fleet, FleetMember, WorkerState
from distributed.errors import WorkerError

logger = logging.getLogger(__name__)

HEALTHY_EVERY_S = 60.0  # how often a worker that answers is asked again (its model may change)


class Prober:
    def __init__(self, fleet: Callable[[], Fleet]) -> None:
        self._fleet = fleet  # the manager swaps its fleet on every edit: always read the current one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._due: dict[str, float] = {}

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="distributed-prober", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            members = [m for m in self._fleet() if m.state != WorkerState.DISABLED]
            for member in members:
                if self._stop.is_set():
                    return
                if now >= self._due.get(member.name, 0.0) and member.state != WorkerState.BUSY:
                    self._due[member.name] = time.monotonic() + check(member)
            upcoming = [self._due.get(m.name, now) for m in members]
            self._stop.wait(timeout=max(0.05, min(upcoming, default=now + HEALTHY_EVERY_S) - time.monotonic()))


def check(member: FleetMember) -> float:
    """Ask one worker for its options (this also checks its password); seconds until it is asked again."""
    try:
        options = member.client.options()
    except WorkerError as error:
        member.record_error(error)
        return member.probe_delay()
    model = options.get("sd_model_checkpoint") if isinstance(options, dict) else None
    member.model = str(model) if model else None
    if member.state != WorkerState.BUSY:
        member.set_state(WorkerState.ONLINE, "" if member.state.usable else "answered the health check")
    return HEALTHY_EVERY_S
