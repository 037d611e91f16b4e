"""Runs a job on the fleet: chunks in parallel, re-planned as results arrive, failures re-queued, never a hang.

One loop in the calling thread owns all job state; HTTP calls run in a thread pool and come back as futures. The
loop waits on those futures (and on a wake-up future that interrupt(), skip() and the master's lane complete) with
a timeout set by the next chunk deadline, probe or progress tick, so it never polls a flag. Every chunk has a
deadline from its predicted time; a chunk that fails, times out or comes back garbled returns its indices to the
pending pool with the same seeds, and its worker is probed with backoff and re-admitted when it answers again.

The webui's master takes part through a LocalLane: it is planned like any worker, is offered chunks when it is
free, and takes re-queued or unstarted images whenever the plan says it finishes them first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from distributed.engine.admission import Admission
from distributed.engine.client import GenerationResponse
from distributed.engine.config import Timeouts
from distributed.engine.costmodel import CostModel, prior
from distributed.engine.fleet import Fleet, FleetMember, WorkerState
from distributed.engine.jobs import ImageResult, JobResult, JobSpec, WorkerStats, check_response
from distributed.engine.jobstate import (
    INTERRUPT_GRACE_S,
    MAX_BAD_WORKERS,
    PROGRESS_TICK_S,
    READ_FACTOR,
    Admit,
    EventSink,
    InFlight,
    MemberJobState,
    ProgressEvent,
)
from distributed.engine.lane import LocalLane
from distributed.engine.lanejob import LaneMember
from distributed.engine.scheduler import Chunk, Plan, Slot, member_slot, plan
from distributed.errors import (
    DistributedError,
    JobError,
    NoWorkersError,
    WorkerError,
    WorkerHTTPError,
    WorkerInvalidResponse,
    WorkerModelMissing,
)

logger = logging.getLogger(__name__)

__all__ = ["Job", "ProgressEvent"]


class Job(Admission, LaneMember):
    def __init__(
        self,
        fleet: Fleet,
        spec: JobSpec,
        on_event: EventSink | None = None,
        workers: list[str] | None = None,
        timeouts: Timeouts | None = None,
        indices: Iterable[int] | None = None,
        lane: LocalLane | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.fleet = fleet
        self.spec = spec
        self.on_event = on_event or (lambda event: None)
        self.timeouts = timeouts or fleet.config.options.timeouts
        names = set(workers) if workers is not None else None
        self.members = [m for m in fleet if names is None or m.name in names]
        self.lane = lane
        self.admit = admit
        self._wake: Future[None] = Future()
        self._wake_lock = threading.Lock()
        self._interrupted = False
        self._skip_requested = False
        self._pending: set[int] = set(range(spec.images) if indices is None else indices)
        self._total = len(self._pending)
        self._results: dict[int, ImageResult] = {}
        self._local_done: set[int] = set()  # indices the master rendered itself
        self._inflight: dict[Future[GenerationResponse], InFlight] = {}
        self._side: dict[Future[Any], tuple[str, FleetMember]] = {}  # admission, progress, interrupt calls
        self._local: dict[str, MemberJobState] = {m.name: MemberJobState() for m in self.members}
        self._stats: dict[str, WorkerStats] = {m.name: WorkerStats() for m in self.members}
        if lane is not None:
            self._stats[lane.name] = WorkerStats()
            lane.attach(self._poke)
        self._failures: list[str] = []
        self._bad_workers: dict[int, set[str]] = {}  # image index -> workers that failed it with 5xx/garbage
        self._busy_elsewhere: dict[str, float] = {}
        self._index_misses: dict[int, int] = {}  # image index -> deadlines it missed, for longer retries
        self._pool: ThreadPoolExecutor | None = None
        self._started = time.monotonic()
        self._admit_until = 0.0
        self._extras_planned = False
        self._extras: dict[str, Chunk] = {}  # opt-in extra images, each sent only to a worker that would idle
        self._extra_limit = 0.0

    # -- control from other threads ------------------------------------------------------------------------------
    def _poke(self) -> None:
        with self._wake_lock:
            if not self._wake.done():
                self._wake.set_result(None)

    def interrupt(self) -> None:
        self._interrupted = True
        self._poke()

    def skip(self) -> None:
        self._skip_requested = True
        self._poke()

    # -- the master's first chunk, before anything touches the network -----------------------------------------
    def plan_now(self) -> Plan:
        """The plan from what is known now (no network call): every usable worker, and the master if it renders."""
        now = time.monotonic()
        slots = [self._slot(m, now) for m in self.members if m.state.usable]
        if self.lane is not None and not self.lane.reserve:
            slots.append(self._lane_slot(self.lane, now))
        return plan(self._pending, slots) if slots else Plan([], {})

    def first_local_chunk(self, planned: Plan) -> Chunk | None:
        """The master starts its first chunk of `planned` at once (None: it waits for work)."""
        pieces = planned.for_worker(self.lane.name) if self.lane is not None else []
        if self.lane is None or not pieces:
            return None
        self._pending.difference_update(pieces[0].indices)
        self.lane.take_first(pieces[0])
        return pieces[0]

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> JobResult:
        self._started = time.monotonic()
        if not self.members and self.lane is None:
            raise NoWorkersError("no workers are configured for this job")
        pool = ThreadPoolExecutor(max_workers=max(4, 3 * len(self.members)), thread_name_prefix="distributed-job")
        self._pool = pool
        try:
            self._start_admission(pool)
            return self._loop(pool)
        except JobError as error:
            for flight in self._inflight.values():  # nothing keeps rendering for a job that ended
                pool.submit(flight.member.client.interrupt)
            error.partial = self._result()
            raise
        finally:
            if self.lane is not None:
                self.lane.finish()
            pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self, pool: ThreadPoolExecutor) -> JobResult:
        idle_since: float | None = None
        next_tick = time.monotonic() + PROGRESS_TICK_S
        while True:
            with self._wake_lock:
                if self._wake.done():
                    self._wake = Future()
            now = time.monotonic()
            if self._interrupted:
                return self._finish_interrupted(pool)
            if self._skip_requested:
                self._skip_requested = False
                for flight in self._inflight.values():
                    self._side[pool.submit(flight.member.client.skip)] = ("skip", flight.member)
            self._take_lane_reports()
            self._dispatch(pool, now)
            lane_busy = self.lane is not None and self.lane.current is not None
            if not self._pending and not self._inflight and not lane_busy:
                return self._result()  # extras not started by now would only delay the job
            if not self._inflight and not lane_busy:
                idle_since = idle_since or now
                self._raise_if_hopeless(now - idle_since)
            else:
                idle_since = None
            self._expire_lane(now)
            if now >= next_tick:
                self._tick_progress(pool)
                next_tick = now + PROGRESS_TICK_S
            self._submit_due_probes(pool, now)
            timeout = max(0.0, min(self._next_wakeup(next_tick), next_tick) - time.monotonic())
            done, _ = wait([*self._inflight, *self._side, self._wake], timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                if future in self._inflight:
                    self._on_chunk_done(future)
                elif future in self._side:
                    self._on_side_done(future)
            self._expire_deadlines(time.monotonic())

    def _next_wakeup(self, default: float) -> float:
        moments = [default]
        moments += [f.deadline for f in self._inflight.values()]
        moments += [s.next_probe_at for s in self._local.values() if s.next_probe_at is not None]
        if self._admit_until > time.monotonic():
            moments.append(self._admit_until)
        return min(moments)

    # -- planning and sending ------------------------------------------------------------------------------------
    def _candidates(self) -> list[FleetMember]:
        return [
            m
            for m in self.members
            if m.state.usable and self._local[m.name].excluded is None and self._local[m.name].admitted
        ]

    def _prior(self) -> CostModel:
        return prior([m.cost for m in self.members if m.calibrated and m.cost is not None], self.spec.workload)

    def _cost(self, member: FleetMember) -> CostModel:
        return member.cost if member.cost is not None else member.ensure_cost(self._prior())

    def _slot(self, member: FleetMember, now: float) -> Slot:
        cost = self._cost(member)
        busy = [f for f in self._inflight.values() if f.member is member]
        available = max([0.0, *[f.predicted_end - now for f in busy]])
        available = max(available, self._busy_elsewhere.get(member.name, 0.0) - now)
        caps = member.config.caps
        return member_slot(
            member.name,
            cost.overhead_s,
            cost.per_image(self.spec.workload),
            available,
            max_batch=caps.max_batch,
            max_pixels=caps.max_pixels,
            image_pixels=self.spec.workload.pixels,
            measured=member.calibrated,
            one_prompt_per_request=not self.spec.uniform,
        )

    def _dispatch(self, pool: ThreadPoolExecutor, now: float) -> None:
        if not self._pending and not self._extras:
            return
        candidates = self._candidates()
        busy = {f.member.name for f in self._inflight.values()}
        # a worker busy elsewhere is planned for (its share waits for it) but sent nothing until it shows it is free:
        # a chunk queued behind someone else's job could not move to a worker that turns out faster
        waiting = busy | set(self._busy_elsewhere)
        if all(m.name in self._busy_elsewhere for m in candidates) and not self._inflight and not self._lane_working():
            waiting = busy  # nobody else can work: queue behind the other work rather than wait without end
        admitting = now < self._admit_until and self._admitting()
        idle = [] if admitting else [m for m in candidates if m.name not in waiting]
        lane = self.lane if self._lane_eligible(candidates) else None
        lane_free = lane is not None and lane.current is None and bool(self._pending)
        if not idle and not lane_free:
            return
        slots = [self._slot(m, now) for m in candidates]
        if lane is not None:
            slots.append(self._lane_slot(lane, now))
        if self.spec.extra_slack is not None and not self._extras_planned and self._pending and idle:
            self._extras_planned = True
            with_extras = plan(self._pending, slots, self.spec.extra_slack, first_extra_index=self.spec.images)
            self._extras = {
                c.worker: c for c in with_extras.chunks if c.extra and (lane is None or c.worker != lane.name)
            }
            self._extra_limit = now + with_extras.makespan_s
        result = plan(self._pending, slots) if self._pending else None
        if result is not None:
            logger.debug("plan for %d pending images: %s", len(self._pending), result.shares)
        if lane is not None and lane_free and result is not None:
            pieces = result.for_worker(lane.name)
            if pieces:
                self._pending.difference_update(pieces[0].indices)
                lane.offer(pieces[0])
                self._emit(
                    lane.name,
                    "started",
                    worker_done=self._stats[lane.name].images,
                    detail=f"images {pieces[0].start}-{pieces[0].end}",
                )
        for member in idle:
            real = result.for_worker(member.name) if result else []
            if real:
                self._send(pool, member, real[0], now)
                continue
            extra = self._extras.get(member.name)
            cost = member.cost
            if extra and cost is not None and now + cost.predict(extra.count, self.spec.workload) <= self._extra_limit:
                del self._extras[member.name]
                self._send(pool, member, extra, now)

    def _lane_working(self) -> bool:
        return self.lane is not None and not self.lane.finished and not self.lane.reserve

    def _send(self, pool: ThreadPoolExecutor, member: FleetMember, chunk: Chunk, now: float) -> None:
        cost = self._cost(member)
        # only sent while busy elsewhere when nobody else can work: it waits in that worker's queue first
        waiting = max(0.0, self._busy_elsewhere.pop(member.name, 0.0) - now)
        predicted = waiting + cost.predict(chunk.count, self.spec.workload)
        # a chunk that missed a deadline before is retried with a deadline twice as long, each time
        retries = max((self._index_misses.get(i, 0) for i in chunk.indices), default=0)
        allowed = (self.timeouts.chunk_min_s + self.timeouts.chunk_factor * predicted) * 2**retries
        payload = self.spec.chunk_payload(chunk)
        future = pool.submit(member.client.generate, self.spec.kind, payload, allowed * READ_FACTOR)
        self._inflight[future] = InFlight(member, chunk, now, now + allowed, now + predicted, observe=waiting == 0)
        if not chunk.extra:
            self._pending.difference_update(chunk.indices)
        member.set_state(WorkerState.BUSY, "rendering")
        self._stats[member.name].chunks += 1
        stats = self._stats[member.name]
        self._emit(member.name, "started", worker_done=stats.images, detail=f"images {chunk.start}-{chunk.end}")

    # -- results -------------------------------------------------------------------------------------------------
    def _on_chunk_done(self, future: Future[GenerationResponse]) -> None:
        flight = self._inflight.pop(future)
        member, chunk = flight.member, flight.chunk
        now = time.monotonic()
        try:
            response = future.result()
            images = check_response(self.spec, chunk, response, partial=self._interrupted)
        except WorkerError as error:
            self._chunk_failed(flight, error)
            return
        except DistributedError as error:  # a config problem (password_env unset) surfaces here
            self._chunk_failed(flight, WorkerInvalidResponse(member.name, str(error)))
            return
        elapsed = now - flight.sent_at
        if flight.observe and member.cost is not None and not self._interrupted:
            member.cost.observe(chunk.count, self.spec.workload, elapsed)
            member.calibrated = True
        for image in images:
            self._results[image.index] = image
        missing = [i for i in chunk.indices if i not in self._results]
        if not chunk.extra:
            self._pending.update(missing)
        stats = self._stats[member.name]
        stats.images += len(images)
        stats.busy_s += elapsed
        stats.spans.append((flight.sent_at - self._started, now - self._started, len(images)))
        if member.state == WorkerState.BUSY and not any(f.member is member for f in self._inflight.values()):
            member.set_state(WorkerState.ONLINE)
        self._emit(member.name, "done", worker_done=stats.images)

    def _chunk_failed(self, flight: InFlight, error: WorkerError) -> None:
        member, chunk = flight.member, flight.chunk
        if not chunk.extra:
            self._pending.update(i for i in chunk.indices if i not in self._results)
        self._stats[member.name].failed_chunks += 1
        self._failures.append(str(error))
        logger.warning("chunk %d-%d lost on %s: %s; re-queued", chunk.start, chunk.end, member.name, error)
        if isinstance(error, WorkerModelMissing):
            self._local[member.name].excluded = str(error)
        elif isinstance(error, (WorkerHTTPError, WorkerInvalidResponse)) and not chunk.extra:
            # one worker answering garbage is that worker's fault; every worker failing the same image is the job's
            limit = min(MAX_BAD_WORKERS, len(self.members))
            for index in chunk.indices:
                failed_on = self._bad_workers.setdefault(index, set())
                failed_on.add(member.name)
                if len(failed_on) >= limit:
                    raise JobError(f"image {index} failed on {len(failed_on)} workers; last: {error}")
        member.record_error(error)
        self._local[member.name].admitted = False  # it must answer an admission call again before new work
        self._probe_later_if_offline(member)
        self._emit(member.name, "failed", detail=str(error))

    # -- ending --------------------------------------------------------------------------------------------------
    def _finish_interrupted(self, pool: ThreadPoolExecutor) -> JobResult:
        if self.lane is not None:
            self.lane.finish()
        calls = [pool.submit(f.member.client.interrupt) for f in self._inflight.values()]
        end = time.monotonic() + INTERRUPT_GRACE_S
        while self._inflight and time.monotonic() < end:
            done, _ = wait(list(self._inflight), timeout=end - time.monotonic(), return_when=FIRST_COMPLETED)
            for future in done:
                self._on_chunk_done(future)
        wait(calls, timeout=max(0.0, end - time.monotonic()))
        for flight in self._inflight.values():
            if flight.member.state == WorkerState.BUSY:
                flight.member.set_state(WorkerState.ONLINE)
        return self._result(interrupted=True)

    def _result(self, interrupted: bool = False) -> JobResult:
        images = [self._results[i] for i in sorted(self._results)]
        excluded = {m.name: reason for m in self.members if (reason := self._local[m.name].excluded)}
        return JobResult(
            images, time.monotonic() - self._started, self._stats, self._failures, interrupted, excluded=excluded
        )

    def _emit(self, worker: str, kind: str, **fields: Any) -> None:
        done = sum(1 for i in self._results if i < self.spec.images) + len(self._local_done)
        total = self._total
        try:
            self.on_event(ProgressEvent(worker, kind, done, total, **fields))
        except Exception:  # a broken progress display must not break the job
            logger.exception("progress callback failed")
