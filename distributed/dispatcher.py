"""Runs a job on the fleet: chunks in parallel, re-planned as results arrive, failures re-queued, never a hang.

One loop in the calling thread owns all job state; HTTP calls run in a thread pool and come back as futures. The
loop waits on those futures (and on a sentinel future that interrupt() completes) with a timeout set by the next
chunk deadline, probe or progress tick, so it never polls a flag. Every chunk has a deadline from its predicted
time; a chunk that fails, times out or comes back garbled returns its indices to the pending pool with the same
seeds, and its worker is probed with backoff and re-admitted when it answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from distributed.client import GenerationResponse
from distributed.config import Timeouts
from distributed.costmodel import CostModel, prior
from distributed.errors import (
    DistributedError,
    JobError,
    NoWorkersError,
    WorkerError,
    WorkerHTTPError,
    WorkerInvalidResponse,
    WorkerModelMissing,
    WorkerTimeout,
)
from distributed.fleet import Fleet, FleetMember, WorkerState
from distributed.jobs import ImageResult, JobResult, JobSpec, WorkerStats, check_response
from distributed.scheduler import Chunk, Slot, plan

logger = logging.getLogger(__name__)

PROGRESS_TICK_S = 0.5
DEFAULT_MAX_BATCH = 32  # images per request when a worker has no cap: large batches risk VRAM and long deadlines
INTERRUPT_GRACE_S = 0.8  # how long an interrupted job waits for the images already made
MISSED_PROGRESS_LIMIT = 2  # unanswered progress calls in a row before a busy worker counts as dead
MAX_BAD_WORKERS = 3  # distinct workers failing the same image with an HTTP error or garbage: the request is bad


@dataclass
class ProgressEvent:
    worker: str
    kind: str  # "started", "done", "failed", "progress", "state"
    done: int  # images of the job finished so far (all workers)
    total: int
    worker_done: int = 0
    step: int = 0
    steps: int = 0
    eta_s: float | None = None
    detail: str = ""


@dataclass
class _InFlight:
    member: FleetMember
    chunk: Chunk
    sent_at: float
    deadline: float
    predicted_end: float
    observe: bool  # the worker was idle when sent, so the time is its own speed
    missed_progress: int = 0


@dataclass
class _MemberJobState:
    excluded: str | None = None  # why this worker takes no part in this job (auth, model)
    next_probe_at: float | None = None


EventSink = Callable[[ProgressEvent], None]


class Job:
    def __init__(
        self,
        fleet: Fleet,
        spec: JobSpec,
        on_event: EventSink | None = None,
        workers: list[str] | None = None,
        timeouts: Timeouts | None = None,
        indices: Iterable[int] | None = None,
    ) -> None:
        self.fleet = fleet
        self.spec = spec
        self.on_event = on_event or (lambda event: None)
        self.timeouts = timeouts or fleet.config.options.timeouts
        names = set(workers) if workers is not None else None
        self.members = [m for m in fleet if names is None or m.name in names]
        self._wake: Future[None] = Future()
        self._interrupted = False
        self._skip_requested = False
        # the indices this job renders: all N, or the part the webui's master leaves to the fleet
        self._pending: set[int] = set(range(spec.images) if indices is None else indices)
        self._total = len(self._pending)
        self._results: dict[int, ImageResult] = {}
        self._inflight: dict[Future[GenerationResponse], _InFlight] = {}
        self._side: dict[Future[Any], tuple[str, FleetMember]] = {}  # probes, progress, interrupt calls
        self._local: dict[str, _MemberJobState] = {m.name: _MemberJobState() for m in self.members}
        self._stats: dict[str, WorkerStats] = {m.name: WorkerStats() for m in self.members}
        self._failures: list[str] = []
        self._bad_workers: dict[int, set[str]] = {}  # image index -> workers that failed it with 5xx/garbage
        self._busy_elsewhere: dict[str, float] = {}
        self._started = 0.0
        self._extras_planned = False
        self._extras: dict[str, Chunk] = {}  # opt-in extra images, each sent only to a worker that would idle
        self._extra_limit = 0.0

    # -- control from other threads ------------------------------------------------------------------------------
    def interrupt(self) -> None:
        self._interrupted = True
        if not self._wake.done():
            self._wake.set_result(None)

    def skip(self) -> None:
        self._skip_requested = True
        if not self._wake.done():
            self._wake.set_result(None)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> JobResult:
        self._started = time.monotonic()
        if not self.members:
            raise NoWorkersError("no workers are configured for this job")
        pool = ThreadPoolExecutor(max_workers=max(4, 3 * len(self.members)), thread_name_prefix="distributed-job")
        try:
            self._check_availability(pool)
            return self._loop(pool)
        except JobError as error:
            error.partial = self._result()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self, pool: ThreadPoolExecutor) -> JobResult:
        idle_since: float | None = None
        next_tick = time.monotonic() + PROGRESS_TICK_S
        while True:
            now = time.monotonic()
            if self._interrupted:
                return self._finish_interrupted(pool)
            if self._skip_requested:
                self._skip_requested = False
                self._wake = Future()
                for flight in self._inflight.values():
                    self._side[pool.submit(flight.member.client.skip)] = ("skip", flight.member)
            self._dispatch(pool, now)
            if not self._pending and not self._inflight:
                return self._result()  # extras not started by now would only delay the job
            if not self._inflight:
                idle_since = idle_since or now
                self._raise_if_hopeless(now - idle_since)
            else:
                idle_since = None
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
        return min(moments)

    # -- planning and sending ------------------------------------------------------------------------------------
    def _candidates(self) -> list[FleetMember]:
        return [m for m in self.members if m.state.usable and self._local[m.name].excluded is None]

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
        limits = [caps.max_batch or DEFAULT_MAX_BATCH]
        if caps.max_pixels:
            limits.append(max(1, caps.max_pixels // max(1, self.spec.workload.pixels)))
        if not member.calibrated or not self.spec.uniform:
            limits.append(1)  # an unknown worker first shows its speed on a single image; prompts differ by image
        return Slot(
            member.name,
            cost.overhead_s,
            cost.per_image(self.spec.workload),
            available,
            min(limits),
        )

    def _dispatch(self, pool: ThreadPoolExecutor, now: float) -> None:
        if not self._pending and not self._extras:
            return
        candidates = self._candidates()
        busy = {f.member.name for f in self._inflight.values()}
        idle = [m for m in candidates if m.name not in busy]
        if not idle:
            return
        slots = [self._slot(m, now) for m in candidates]
        if self.spec.extra_slack is not None and not self._extras_planned and self._pending:
            self._extras_planned = True
            with_extras = plan(self._pending, slots, self.spec.extra_slack, first_extra_index=self.spec.images)
            self._extras = {c.worker: c for c in with_extras.chunks if c.extra}
            self._extra_limit = now + with_extras.makespan_s
        result = plan(self._pending, slots) if self._pending else None
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

    def _send(self, pool: ThreadPoolExecutor, member: FleetMember, chunk: Chunk, now: float) -> None:
        cost = self._cost(member)
        waiting = max(0.0, self._busy_elsewhere.pop(member.name, 0.0) - now)
        predicted = waiting + cost.predict(chunk.count, self.spec.workload)
        allowed = self.timeouts.chunk_min_s + self.timeouts.chunk_factor * predicted
        payload = self.spec.chunk_payload(chunk)
        future = pool.submit(member.client.generate, self.spec.kind, payload, allowed)
        self._inflight[future] = _InFlight(member, chunk, now, now + allowed, now + predicted, observe=waiting == 0)
        if not chunk.extra:
            self._pending.difference_update(chunk.indices)
        member.set_state(WorkerState.BUSY, "rendering")
        self._stats[member.name].chunks += 1
        self._emit(member.name, "started", detail=f"images {chunk.start}-{chunk.start + chunk.count - 1}")

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

    def _chunk_failed(self, flight: _InFlight, error: WorkerError) -> None:
        member, chunk = flight.member, flight.chunk
        if not chunk.extra:
            self._pending.update(i for i in chunk.indices if i not in self._results)
        self._stats[member.name].failed_chunks += 1
        self._failures.append(str(error))
        logger.warning(
            "chunk %d-%d lost on %s: %s; re-queued", chunk.start, chunk.start + chunk.count - 1, member.name, error
        )
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
        self._probe_later_if_offline(member)
        self._emit(member.name, "failed", detail=str(error))

    def _expire_deadlines(self, now: float) -> None:
        for future, flight in list(self._inflight.items()):
            if now >= flight.deadline:
                del self._inflight[future]
                self._chunk_failed(flight, WorkerTimeout(flight.member.name, "the chunk passed its deadline"))

    # -- availability, progress, probes --------------------------------------------------------------------------
    def _check_availability(self, pool: ThreadPoolExecutor) -> None:
        """Ask every enabled worker whether it answers and is busy with someone else's job (at once, short timeout).

        Workers that failed in an earlier job are asked too: this is where they are re-admitted between jobs.
        """
        calls = {pool.submit(m.client.progress): m for m in self.members if m.state != WorkerState.DISABLED}
        done, _ = wait(calls, timeout=self.timeouts.connect_s + self.timeouts.probe_s + 1)
        now = time.monotonic()
        for future, member in calls.items():
            if future not in done:
                member.set_state(WorkerState.OFFLINE, "no answer to progress")
                self._probe_later_if_offline(member)
                continue
            try:
                progress = future.result()
            except WorkerError as error:
                member.record_error(error)
                self._probe_later_if_offline(member)
                continue
            state = progress.get("state") or {}
            if isinstance(state, dict) and state.get("job_count"):
                eta = progress.get("eta_relative")
                self._busy_elsewhere[member.name] = now + (float(eta) if isinstance(eta, (int, float)) else 5.0)
            member.set_state(WorkerState.ONLINE)

    def _tick_progress(self, pool: ThreadPoolExecutor) -> None:
        asked = {m.name for kind, m in self._side.values() if kind == "progress"}
        for flight in self._inflight.values():
            if flight.member.name not in asked:
                self._side[pool.submit(flight.member.client.progress)] = ("progress", flight.member)
                asked.add(flight.member.name)

    def _probe_later_if_offline(self, member: FleetMember) -> None:
        """An offline worker is asked again after its backoff (auth or model problems do not fix themselves)."""
        if member.state == WorkerState.OFFLINE:
            self._local[member.name].next_probe_at = time.monotonic() + member.probe_delay()

    def _submit_due_probes(self, pool: ThreadPoolExecutor, now: float) -> None:
        for member in self.members:
            local = self._local[member.name]
            if local.next_probe_at is not None and now >= local.next_probe_at:
                local.next_probe_at = None
                self._side[pool.submit(member.client.ping)] = ("probe", member)

    def _on_side_done(self, future: Future[Any]) -> None:
        kind, member = self._side.pop(future)
        error = future.exception()
        flights = [f for f in self._inflight.values() if f.member is member]
        if kind == "probe":
            if error is None:
                member.set_state(WorkerState.ONLINE, "answered the health probe")
                self._emit(member.name, "state", detail="back online")
            else:
                member.set_state(WorkerState.OFFLINE, getattr(error, "reason", "probe failed"), str(error))
                self._probe_later_if_offline(member)
        elif kind == "progress":
            if error is not None:
                for flight in flights:
                    flight.missed_progress += 1
                    if flight.missed_progress >= MISSED_PROGRESS_LIMIT:
                        self._abandon(flight, WorkerTimeout(member.name, f"stopped answering ({error})"))
                return
            progress = future.result()
            state = progress.get("state") or {}
            for flight in flights:
                flight.missed_progress = 0
            if flights and isinstance(state, dict):
                self._emit(
                    member.name,
                    "progress",
                    worker_done=self._stats[member.name].images,
                    step=int(state.get("sampling_step") or 0),
                    steps=int(state.get("sampling_steps") or 0),
                    eta_s=max(0.0, flights[0].predicted_end - time.monotonic()),
                )

    def _abandon(self, flight: _InFlight, error: WorkerError) -> None:
        for future, candidate in list(self._inflight.items()):
            if candidate is flight:
                del self._inflight[future]
                self._chunk_failed(flight, error)

    def _raise_if_hopeless(self, waited: float) -> None:
        if self._candidates():
            return
        probing = any(self._local[m.name].next_probe_at is not None for m in self.members) or any(
            kind == "probe" for kind, _ in self._side.values()
        )
        if probing and waited < self.timeouts.no_worker_s:
            return
        reasons = "; ".join(
            f"{m.name}: {self._local[m.name].excluded or m.status.reason or m.state.value}" for m in self.members
        )
        raise NoWorkersError(f"{len(self._pending)} images left and no worker can take them ({reasons})")

    # -- ending --------------------------------------------------------------------------------------------------
    def _finish_interrupted(self, pool: ThreadPoolExecutor) -> JobResult:
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
        return JobResult(images, time.monotonic() - self._started, self._stats, self._failures, interrupted)

    def _emit(self, worker: str, kind: str, **fields: Any) -> None:
        done = sum(1 for i in self._results if i < self.spec.images)
        try:
            self.on_event(ProgressEvent(worker, kind, done, self._total, **fields))
        except Exception:  # a broken progress display must not break the job
            logger.exception("progress callback failed")
