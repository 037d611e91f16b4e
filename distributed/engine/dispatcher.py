"""Runs a job on the fleet: chunks in parallel, re-planned as results arrive, failures re-queued, never a hang.

One loop in the calling thread owns all job state; calls to workers run on a Runtime (threads, or simulated time
in tests) and come back as futures. The loop waits on those futures and on the JobControl's wake-up (interrupt,
skip and the master's lane complete it) with a timeout set by the next chunk deadline, probe or progress tick, so
it never polls a flag. Where every image and chunk stands is the ChunkBook's: it holds the one set of moves
(pending, held, done; sent, done, failed, expired, cancelled). Every chunk has a deadline from its predicted time
(the RetryPolicy's rules); a chunk that fails, times out or comes back garbled returns its indices to the book's
pending pool with the same seeds, and its worker is probed with backoff and re-admitted when it answers again.

The webui's master takes part through a LocalLane: it is planned like any worker, is offered chunks when it is
free, and takes re-queued or unstarted images whenever the plan says it finishes them first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from distributed.engine.admission import Admission
from distributed.engine.chunkbook import BookedChunk, ChunkBook, ChunkState
from distributed.engine.client import GenerationResponse
from distributed.engine.config import Timeouts
from distributed.engine.costmodel import CostModel, prior
from distributed.engine.fleet import Fleet, FleetMember, WorkerState
from distributed.engine.jobs import ImageResult, JobResult, JobSpec, WorkerStats, check_response
from distributed.engine.jobstate import (
    Admit,
    EventKind,
    EventSink,
    Extras,
    InFlight,
    JobControl,
    MemberJobState,
    ProgressEvent,
    RetryPolicy,
)
from distributed.engine.lane import LocalLane
from distributed.engine.lanejob import LaneMember
from distributed.engine.runtime import Runtime, ThreadRuntime
from distributed.engine.scheduler import DEFAULT_MAX_BATCH, Chunk, Plan, Slot, member_slot, plan
from distributed.engine.share import FleetShare
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

__all__ = ["EventKind", "Job", "ProgressEvent"]


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
        runtime: Runtime | None = None,
        share: FleetShare | None = None,
    ) -> None:
        self.fleet = fleet
        self.spec = spec
        self.on_event = on_event or (lambda event: None)
        self.policy = RetryPolicy.from_timeouts(timeouts or fleet.config.options.timeouts)
        names = set(workers) if workers is not None else None
        self.members = [m for m in fleet if names is None or m.name in names]
        self.lane = lane
        self.admit = admit
        self.control = JobControl()
        self.share = share  # workers shared with concurrent jobs (the gateway; its clock is the monotonic one)
        self._ticket = share.join(self.control.poke) if share is not None else 0
        self._rt: Runtime = runtime or ThreadRuntime(max(4, 3 * len(self.members)))
        self.book: ChunkBook[ImageResult] = ChunkBook(range(spec.images) if indices is None else indices)
        self._lane_chunks: dict[Chunk, BookedChunk] = {}
        self._inflight: dict[Future[GenerationResponse], InFlight] = {}
        self._side: dict[Future[Any], tuple[str, FleetMember]] = {}  # admission, progress, interrupt calls
        self._local: dict[str, MemberJobState] = {m.name: MemberJobState() for m in self.members}
        self._stats: dict[str, WorkerStats] = {m.name: WorkerStats() for m in self.members}
        if lane is not None:
            self._stats[lane.name] = WorkerStats()
            lane.attach(self.control.poke)
        self._failures: list[str] = []
        self._started = self._rt.now()
        self._admit_until = 0.0
        self._extras = Extras()

    # -- control from other threads ------------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.control.interrupt()

    def skip(self) -> None:
        self.control.skip()

    # -- the master's first chunk, before anything touches the network -----------------------------------------
    def plan_now(self) -> Plan:
        """The plan from what is known now (no network call): every usable worker, and the master if it renders."""
        now = self._rt.now()
        slots = [self._slot(m, now) for m in self.members if m.state.usable]
        if self.lane is not None and not self.lane.reserve:
            slots.append(self._lane_slot(self.lane, now))
        return plan(self.book.pending, slots) if slots else Plan([], {})

    def first_local_chunk(self, planned: Plan) -> Chunk | None:
        """The master starts its first chunk of `planned` at once (None: it waits for work)."""
        pieces = planned.for_worker(self.lane.name) if self.lane is not None else []
        if self.lane is None or not pieces:
            return None
        self._lane_chunks[pieces[0]] = self.book.take(pieces[0], self.lane.name)
        self.lane.take_first(pieces[0])
        return pieces[0]

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> JobResult:
        self._started = self._rt.now()
        if not self.members and self.lane is None:
            raise NoWorkersError("no workers are configured for this job")
        try:
            self._start_admission()
            return self._loop()
        except JobError as error:
            for flight in self._inflight.values():  # nothing keeps rendering for a job that ended
                self._rt.submit(flight.member.client.interrupt)
                self.book.settle(flight.booked, ChunkState.CANCELLED)
            error.partial = self._result()
            raise
        finally:
            if self.lane is not None:
                self.lane.finish()
            if self.share is not None:
                self.share.leave(self._ticket)
            self._rt.close()

    def _loop(self) -> JobResult:
        idle_since: float | None = None
        next_tick = self._rt.now() + self.policy.progress_tick_s
        while True:
            self.control.rearm()
            now = self._rt.now()
            if self.control.interrupted:
                return self._finish_interrupted()
            if self.control.take_skip():
                for flight in self._inflight.values():
                    self._side[self._rt.submit(flight.member.client.skip)] = ("skip", flight.member)
            self._take_lane_reports()
            self._dispatch(now)
            lane_busy = self.lane is not None and self.lane.current is not None
            if not self.book.pending and not self._inflight and not lane_busy:
                return self._result()  # extras not started by now would only delay the job
            if not self._inflight and not lane_busy:
                idle_since = idle_since or now
                self._raise_if_hopeless(now - idle_since)
            else:
                idle_since = None
            self._expire_lane(now)
            if now >= next_tick:
                self._tick_progress()
                next_tick = now + self.policy.progress_tick_s
            self._submit_due_probes(now)
            timeout = min(self._next_wakeup(next_tick), next_tick) - self._rt.now()
            done = self._rt.wait([*self._inflight, *self._side, self.control.wake], timeout)
            for future in done:
                if future in self._inflight:
                    self._on_chunk_done(future)
                elif future in self._side:
                    self._on_side_done(future)
            self._expire_deadlines(self._rt.now())

    def _next_wakeup(self, default: float) -> float:
        moments = [default]
        moments += [f.deadline for f in self._inflight.values()]
        moments += [s.next_probe_at for s in self._local.values() if s.next_probe_at is not None]
        if self._admit_until > self._rt.now():
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
        available = max(available, (self._local[member.name].busy_until or 0.0) - now)
        caps = member.config.caps
        overhead, per_image = cost.overhead(self.spec.workload), cost.per_image(self.spec.workload)
        limits = [caps.max_batch or DEFAULT_MAX_BATCH]
        if self.share is not None:  # another job's chunk holds it until its predicted end; chunks are sliced
            available = max(available, (self.share.busy_until(self._ticket, member.name) or now) - now)
            if self.share.slice_s is not None:
                limits.append(max(1, int((self.share.slice_s - overhead) / max(per_image, 1e-6))))
            turns = self.share.contenders(member.name)  # it takes its turn among the jobs that want it
            overhead, per_image = overhead * turns, per_image * turns
        return member_slot(
            member.name,
            overhead,
            per_image,
            available,
            max_batch=min(limits),
            max_pixels=caps.max_pixels,
            image_pixels=self.spec.workload.pixels,
            measured=member.calibrated,
            one_prompt_per_request=not self.spec.uniform,
        )

    def _dispatch(self, now: float) -> None:
        pending = self.book.pending
        if not pending and not self._extras.chunks:
            if self.share is not None:
                self.share.want(self._ticket, set())
            return
        candidates = self._candidates()
        busy = {f.member.name for f in self._inflight.values()}
        if self.share is not None:  # held by another job's chunk
            busy |= {m.name for m in candidates if self.share.busy_until(self._ticket, m.name) is not None}
        # a worker busy elsewhere is planned for (its share waits for it) but sent nothing until it shows it is free:
        # a chunk queued behind someone else's job could not move to a worker that turns out faster
        elsewhere = {m.name for m in candidates if self._local[m.name].busy_until is not None}
        waiting = busy | elsewhere
        if len(elsewhere) == len(candidates) and not self._inflight and not self._lane_working():
            waiting = busy  # nobody else can work: queue behind the other work rather than wait without end
        admitting = now < self._admit_until and self._admitting()
        idle = [] if admitting else [m for m in candidates if m.name not in waiting]
        lane = self.lane if self._lane_eligible(candidates) else None
        lane_free = lane is not None and lane.current is None and bool(pending)
        if not idle and not lane_free and (self.share is None or admitting or not candidates):
            if self.share is not None:
                self.share.want(self._ticket, set())
            return  # with a share the plan is still made: its wants are how this job gets the next free worker
        slots = [self._slot(m, now) for m in candidates]
        if lane is not None:
            slots.append(self._lane_slot(lane, now))
        if self.spec.extra_slack is not None and not self._extras.planned and pending and idle:
            with_extras = plan(pending, slots, self.spec.extra_slack, first_extra_index=self.spec.images)
            chunks = {c.worker: c for c in with_extras.chunks if c.extra and (lane is None or c.worker != lane.name)}
            self._extras = Extras(True, chunks, now + with_extras.makespan_s)
        result = plan(pending, slots) if pending else None
        if result is not None:
            logger.debug("plan for %d pending images: %s", len(pending), result.shares)
        if self.share is not None:
            planned = {c.worker for c in result.chunks} if result is not None else set()
            self.share.want(self._ticket, planned - elsewhere)  # a worker busy outside the gateway is nobody's
        if lane is not None and lane_free and result is not None:
            pieces = result.for_worker(lane.name)
            if pieces:
                self._lane_chunks[pieces[0]] = self.book.take(pieces[0], lane.name)
                lane.offer(pieces[0])
                stats = self._stats[lane.name]
                detail = f"images {pieces[0].start}-{pieces[0].end}"
                self._emit(lane.name, EventKind.STARTED, worker_done=stats.images, detail=detail)
        for member in idle:
            real = result.for_worker(member.name) if result else []
            if real:
                self._send(member, real[0], now)
                continue
            extra = self._extras.chunks.get(member.name)
            cost = member.cost
            if extra and cost is not None and now + cost.predict(extra.count, self.spec.workload) <= self._extras.until:
                del self._extras.chunks[member.name]
                self._send(member, extra, now)

    def _lane_working(self) -> bool:
        return self.lane is not None and not self.lane.finished and not self.lane.reserve

    def _send(self, member: FleetMember, chunk: Chunk, now: float) -> None:
        cost = self._cost(member)
        # only sent while busy elsewhere when nobody else can work: it waits in that worker's queue first
        local = self._local[member.name]
        waiting = max(0.0, (local.busy_until or 0.0) - now)
        predicted = waiting + cost.predict(chunk.count, self.spec.workload)
        if self.share is not None and not self.share.claim(self._ticket, member.name, now + predicted):
            return  # another job is next for this worker; this one is woken when that changes
        local.busy_until = None
        allowed = self.policy.deadline_s(predicted, self.book.retries(chunk))
        booked = self.book.take(chunk, member.name)
        read_timeout = self.policy.read_timeout_s(allowed)
        future = self._rt.submit(member.client.generate, self.spec.kind, self.spec.chunk_payload(chunk), read_timeout)
        self._inflight[future] = InFlight(member, booked, now, now + allowed, now + predicted, observe=waiting == 0)
        member.set_state(WorkerState.BUSY, "rendering")
        self._stats[member.name].chunks += 1
        stats = self._stats[member.name]
        self._emit(member.name, EventKind.STARTED, worker_done=stats.images, detail=f"images {chunk.start}-{chunk.end}")

    # -- results -------------------------------------------------------------------------------------------------
    def _on_chunk_done(self, future: Future[GenerationResponse]) -> None:
        flight = self._inflight.pop(future)
        member, chunk = flight.member, flight.chunk
        self._release(member)
        now = self._rt.now()
        try:
            response = future.result()
            images = check_response(self.spec, chunk, response, partial=self.control.interrupted)
        except WorkerError as error:
            self._chunk_failed(flight, error)
            return
        except DistributedError as error:  # a config problem (password_env unset) surfaces here
            self._chunk_failed(flight, WorkerInvalidResponse(member.name, str(error)))
            return
        elapsed = now - flight.sent_at
        if flight.observe and member.cost is not None and not self.control.interrupted:
            member.cost.observe(chunk.count, self.spec.workload, elapsed)
            member.calibrated = True
        self.book.settle(flight.booked, ChunkState.DONE, {image.index: image for image in images})
        stats = self._stats[member.name]
        stats.images += len(images)
        stats.busy_s += elapsed
        stats.spans.append((flight.sent_at - self._started, now - self._started, len(images)))
        if member.state == WorkerState.BUSY and not any(f.member is member for f in self._inflight.values()):
            member.set_state(WorkerState.ONLINE)
        self._emit(member.name, EventKind.DONE, worker_done=stats.images)

    def _chunk_failed(self, flight: InFlight, error: WorkerError, state: ChunkState = ChunkState.FAILED) -> None:
        member, chunk = flight.member, flight.chunk
        self.book.settle(flight.booked, state)  # its images go back to the queue with the same seeds
        self._stats[member.name].failed_chunks += 1
        self._failures.append(str(error))
        logger.warning("chunk %d-%d lost on %s: %s; re-queued", chunk.start, chunk.end, member.name, error)
        if isinstance(error, WorkerModelMissing) or (isinstance(error, WorkerHTTPError) and error.status == 422):
            # it lacks the model, or refuses a field or option of this request (a headless worker that cannot
            # reproduce a master's setting): this job goes on without it, on the others or the master
            self._local[member.name].excluded = str(error)
        elif isinstance(error, (WorkerHTTPError, WorkerInvalidResponse)) and not chunk.extra:
            # one worker answering garbage is that worker's fault; every worker failing the same image is the job's
            index, workers = self.book.blame(flight.booked)
            if self.policy.request_is_bad(workers, len(self.members)):
                raise JobError(f"image {index} failed on {workers} workers; last: {error}")
        member.record_error(error)
        self._local[member.name].admitted = False  # it must answer an admission call again before new work
        self._probe_later_if_offline(member)
        self._emit(member.name, EventKind.FAILED, detail=str(error))

    # -- ending --------------------------------------------------------------------------------------------------
    def _finish_interrupted(self) -> JobResult:
        self._take_lane_reports()  # the master's last batch, reported just before it passed the interrupt on
        if self.lane is not None:
            self.lane.finish()
        calls = [self._rt.submit(f.member.client.interrupt) for f in self._inflight.values()]
        end = self._rt.now() + self.policy.interrupt_grace_s
        while self._inflight and self._rt.now() < end:
            for future in self._rt.wait(list(self._inflight), end - self._rt.now()):
                self._on_chunk_done(future)
        self._rt.wait(calls, end - self._rt.now())
        for flight in self._inflight.values():
            self.book.settle(flight.booked, ChunkState.CANCELLED)
            self._release(flight.member)
            if flight.member.state == WorkerState.BUSY:
                flight.member.set_state(WorkerState.ONLINE)
        self._inflight.clear()
        return self._result(interrupted=True)

    def _release(self, member: FleetMember) -> None:
        if self.share is not None:
            self.share.release(self._ticket, member.name)

    def _result(self, interrupted: bool = False) -> JobResult:
        results = self.book.results
        images = [results[i] for i in sorted(results)]
        excluded = {m.name: reason for m in self.members if (reason := self._local[m.name].excluded)}
        wall = self._rt.now() - self._started
        return JobResult(images, wall, self._stats, self._failures, interrupted, excluded=excluded)

    def _emit(self, worker: str, kind: EventKind, **fields: Any) -> None:
        done = self.book.done_count(below=self.spec.images)
        try:
            self.on_event(ProgressEvent(worker, kind, done, self.book.total, **fields))
        except Exception:  # a broken progress display must not break the job
            logger.exception("progress callback failed")
