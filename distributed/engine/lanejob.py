"""The webui master's part in a job: its LocalLane planned like a worker, its reports taken in, and a bound on how
long the job waits for a master whose generation broke off.

A mixin of the dispatcher's Job: it reads and writes the job's own state, in the job's one loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from distributed.engine.chunkbook import BookedChunk, ChunkBook
from distributed.engine.fleet import FleetMember
from distributed.engine.jobs import ImageResult, JobSpec, WorkerStats
from distributed.engine.jobstate import EventKind, JobControl, RetryPolicy
from distributed.engine.lane import LocalLane
from distributed.engine.runtime import Runtime
from distributed.engine.scheduler import Chunk, Slot, member_slot

logger = logging.getLogger(__name__)


class LaneMember:
    lane: LocalLane | None
    spec: JobSpec
    policy: RetryPolicy
    book: ChunkBook[ImageResult]
    _lane_chunks: dict[Chunk, BookedChunk]
    _rt: Runtime
    _stats: dict[str, WorkerStats]
    _started: float
    control: JobControl
    # the Job's own methods, used here
    _admitting: Callable[..., bool]
    _emit: Callable[..., None]

    def _lane_slot(self, lane: LocalLane, now: float) -> Slot:
        current = lane.current
        available = 0.0
        if current is not None:
            chunk, since = current
            available = since + lane.cost.predict(chunk.count, self.spec.workload) - now
        per_image = lane.cost.per_image(self.spec.workload)
        overhead = lane.cost.overhead(self.spec.workload)
        return member_slot(lane.name, overhead, per_image, available, max_batch=lane.max_batch)

    def _lane_eligible(self, remote: list[FleetMember]) -> bool:
        """The master renders unless it only orchestrates; then only once no worker can (nor may soon) take work."""
        lane = self.lane
        if lane is None or lane.finished:
            return False
        return not lane.reserve or (not remote and not self._admitting(usable_only=False))

    def _take_lane_reports(self) -> None:
        if self.lane is None:
            return
        for report in self.lane.reports():
            chunk = report.chunk
            self.book.rendered_locally(self._lane_chunks.pop(chunk))
            self.lane.cost.observe(chunk.count, self.spec.workload, report.seconds)
            stats = self._stats[self.lane.name]
            stats.images += chunk.count
            stats.chunks += 1
            stats.busy_s += report.seconds
            end = self._rt.now() - self._started
            stats.spans.append((end - report.seconds, end, chunk.count))
            self._emit(self.lane.name, EventKind.DONE, worker_done=stats.images)

    def _expire_lane(self, now: float) -> None:
        """The master's loop stopped reporting (its generation broke off): end the job rather than wait forever."""
        lane = self.lane
        current = lane.current if lane is not None else None
        if lane is None or current is None:
            return
        chunk, since = current
        predicted = lane.cost.predict(chunk.count, self.spec.workload)
        if self.policy.lane_overdue(now - since, predicted):
            logger.error("the master's own chunk %d-%d never finished; ending the job", chunk.start, chunk.end)
            self.control.interrupt()
