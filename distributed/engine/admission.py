"""How a job admits its workers and follows their progress: each one's preparation (the webui's preflight) and
availability, asked at once at the start and again, with backoff, for a worker that failed; nothing waits on a
worker that does not answer; a busy worker that stops answering its progress calls loses its chunk; a chunk's
deadline grows while its worker advances, and one that passes it is interrupted on the worker and retried with a
longer one; a job with no worker left ends with the reasons.

A mixin of the dispatcher's Job: it reads and writes the job's own state, in the job's one loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from distributed.engine.chunkbook import ChunkBook, ChunkState
from distributed.engine.client import GenerationResponse
from distributed.engine.fleet import FleetMember, WorkerState
from distributed.engine.jobs import ImageResult, JobSpec, WorkerStats
from distributed.engine.jobstate import Admit, EventKind, InFlight, MemberJobState, RetryPolicy
from distributed.engine.runtime import Runtime
from distributed.engine.share import FleetShare
from distributed.errors import NoWorkersError, WorkerError, WorkerModelMissing, WorkerTimeout


class Admission:
    members: list[FleetMember]
    spec: JobSpec
    admit: Admit | None
    _local: dict[str, MemberJobState]
    _side: dict[Future[Any], tuple[str, FleetMember]]
    _failures: list[str]
    _admit_until: float
    policy: RetryPolicy
    book: ChunkBook[ImageResult]
    _rt: Runtime
    share: FleetShare | None
    _ticket: int
    _release: Callable[[FleetMember], None]

    _inflight: dict[Future[GenerationResponse], InFlight]
    # the Job's own methods, used here
    _emit: Callable[..., None]
    _chunk_failed: Callable[[InFlight, WorkerError, ChunkState], None]
    _candidates: Callable[[], list[FleetMember]]
    _lane_eligible: Callable[[list[FleetMember]], bool]
    _stats: dict[str, WorkerStats]

    def _admission(self, member: FleetMember) -> tuple[dict[str, Any], dict[str, Any]]:
        """One worker's preparation for this job (checkpoint, scripts: the webui's preflight) and its progress."""
        request = self.admit(member) if self.admit is not None else {}
        return request, member.client.progress()

    def _start_admission(self) -> None:
        """Ask every enabled worker at once; nothing waits on one that does not answer.

        The first plan waits up to the policy's admit_grace_s for workers that were online; later answers join the
        running job. Workers that failed in an earlier job are asked too: this is where they are re-admitted
        between jobs.
        """
        self._admit_until = self._rt.now() + self.policy.admit_grace_s
        for member in self.members:
            if member.state != WorkerState.DISABLED:
                self._ask_admission(member)

    def _ask_admission(self, member: FleetMember) -> None:
        self._local[member.name].asking = True
        self._side[self._rt.submit(self._admission, member)] = ("admit", member)

    def _admitting(self, usable_only: bool = True) -> bool:
        return any(self._local[m.name].asking for m in self.members if m.state.usable or not usable_only)

    def _on_admitted(self, member: FleetMember, future: Future[Any]) -> None:
        local = self._local[member.name]
        local.asking = False
        error = future.exception()
        if isinstance(error, WorkerModelMissing):
            local.excluded = str(error)
            member.record_error(error)
            self._failures.append(str(error))
            return
        if error is not None:
            if isinstance(error, WorkerError):
                member.record_error(error)
            else:
                member.set_state(WorkerState.OFFLINE, "admission failed", str(error))
            if not local.failed_admission:  # said once per job, not at every probe
                local.failed_admission = True
                self._failures.append(f"{member.name}: {error}" if member.name not in str(error) else str(error))
            self._probe_later_if_offline(member)
            return
        request, progress = future.result()
        if request:
            self.spec.per_worker[member.name] = request
        busy_for = self._busy_elsewhere_s(member, progress)
        if busy_for is not None:
            local.busy_until = self._rt.now() + busy_for
        was_usable = member.state.usable
        local.admitted = True
        member.set_state(WorkerState.ONLINE, "" if was_usable else "answered the health probe")
        if not was_usable:
            self._emit(member.name, EventKind.STATE, detail="back online")

    def _probe_later_if_offline(self, member: FleetMember) -> None:
        """An offline worker is asked again after its backoff (auth or model problems do not fix themselves)."""
        if member.state == WorkerState.OFFLINE:
            self._local[member.name].next_probe_at = self._rt.now() + member.probe_delay()

    def _submit_due_probes(self, now: float) -> None:
        for member in self.members:
            local = self._local[member.name]
            if local.next_probe_at is not None and now >= local.next_probe_at and not local.asking:
                local.next_probe_at = None
                self._ask_admission(member)

    # -- progress of chunks in flight ---------------------------------------------------------------------------
    def _tick_progress(self) -> None:
        asked = {m.name for kind, m in self._side.values() if kind in ("progress", "busy")}
        for flight in self._inflight.values():
            if flight.member.name not in asked:
                self._side[self._rt.submit(flight.member.client.progress)] = ("progress", flight.member)
                asked.add(flight.member.name)
        # a worker busy with someone else's work is checked against what it shows until it is free
        for member in self.members:
            if self._local[member.name].busy_until is not None and member.name not in asked:
                self._side[self._rt.submit(member.client.progress)] = ("busy", member)

    def _on_side_done(self, future: Future[Any]) -> None:
        kind, member = self._side.pop(future)
        if kind == "admit":
            self._on_admitted(member, future)
            return
        if kind == "busy":
            if future.exception() is None:
                busy_for = self._busy_elsewhere_s(member, future.result())
                if busy_for is None:
                    self._local[member.name].busy_until = None  # free now: it may take work
                else:  # still busy: its estimate moves with what it shows, never into the past
                    self._local[member.name].busy_until = self._rt.now() + max(busy_for, 1.0)
            return
        if kind == "interrupt":  # an abandoned chunk has stopped on the worker: another job may use it
            self._release(member)
            return
        if kind != "progress":
            return
        error = future.exception()
        flights = [f for f in self._inflight.values() if f.member is member]
        if error is not None:
            for flight in flights:
                flight.missed_progress += 1
                if flight.missed_progress >= self.policy.missed_progress_limit:
                    self._abandon(flight, WorkerTimeout(member.name, f"stopped answering ({error})"))
            return
        progress = future.result()
        state = progress.get("state") or {}
        marker = _marker(state)
        for flight in flights:
            flight.missed_progress = 0
            if marker is not None and marker != flight.marker:  # advancing: slow is not dead
                flight.marker = marker
                flight.deadline = self.policy.extended(flight.deadline, self._rt.now())
        if flights and isinstance(state, dict):
            self._emit(
                member.name,
                EventKind.PROGRESS,
                worker_done=self._stats[member.name].images,
                step=int(state.get("sampling_step") or 0),
                steps=int(state.get("sampling_steps") or 0),
                eta_s=max(0.0, flights[0].predicted_end - self._rt.now()),
            )

    def _busy_elsewhere_s(self, member: FleetMember, progress: dict[str, Any]) -> float | None:
        if self.share is not None and self.share.used_lately(member.name):
            return None  # what it shows is a chunk of the gateway's own jobs, which the share accounts for
        return busy_elsewhere_s(progress)

    def _abandon(self, flight: InFlight, error: WorkerError) -> None:
        for future, candidate in list(self._inflight.items()):
            if candidate is flight:
                del self._inflight[future]
                self._release(flight.member)
                self._chunk_failed(flight, error, ChunkState.FAILED)

    def _expire_deadlines(self, now: float) -> None:
        """A chunk past its deadline (which grows while its worker shows progress) is interrupted on its worker and
        re-queued with a longer deadline; a worker that misses the policy's misses_to_hold_out sits the job out."""
        for future, flight in list(self._inflight.items()):
            if now < flight.deadline:
                continue
            del self._inflight[future]
            member, chunk = flight.member, flight.chunk
            self._side[self._rt.submit(member.client.interrupt)] = ("interrupt", member)
            local = self._local[member.name]
            local.deadline_misses += 1
            waited = now - flight.sent_at
            reason = f"images {chunk.start}-{chunk.end} passed their deadline after {waited:.0f} s without progress"
            if self.policy.holds_out(local.deadline_misses):
                local.excluded = f"{member.name}: missed {local.deadline_misses} deadlines in this job (last: {reason})"
            error = WorkerTimeout(member.name, f"{reason} (interrupted on the worker)")
            self._chunk_failed(flight, error, ChunkState.EXPIRED)

    def _raise_if_hopeless(self, waited: float) -> None:
        if self._candidates() or self._lane_eligible([]) or self._admitting(usable_only=False):
            return  # admission calls have their own timeouts
        probing = any(self._local[m.name].next_probe_at is not None for m in self.members)
        if probing and waited < self.policy.no_worker_s:
            return
        reasons = "; ".join(
            f"{m.name}: {self._local[m.name].excluded or m.status.reason or m.state.value}" for m in self.members
        )
        raise NoWorkersError(f"{len(self.book.pending)} images left and no worker can take them ({reasons})")


def _marker(state: object) -> tuple[object, ...] | None:
    """What changes while a worker renders: its job, batch and step (None when it renders nothing)."""
    if not isinstance(state, dict) or not state.get("job_count"):
        return None
    return (state.get("job_timestamp"), state.get("job_no"), state.get("sampling_step"))


def busy_elsewhere_s(progress: dict[str, Any]) -> float | None:
    """How long a worker stays busy with someone else's work (None: idle). Its own ETA covers only the job it runs;
    what its progress also shows (requests queued behind that job) is counted as jobs of the same length."""
    state = progress.get("state") or {}
    if not isinstance(state, dict) or not state.get("job_count"):
        return None
    eta = progress.get("eta_relative")
    remaining = float(eta) if isinstance(eta, (int, float)) and eta >= 0 else 5.0
    fraction = progress.get("progress")
    queued = state.get("queued")
    if isinstance(queued, int) and queued > 0 and isinstance(fraction, (int, float)) and 0 < fraction <= 1:
        whole = remaining / max(1e-3, 1.0 - fraction) if fraction < 1 else remaining
        remaining += queued * whole
    return remaining
