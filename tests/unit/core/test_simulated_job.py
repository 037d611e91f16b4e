"""Whole jobs through the real dispatcher on simulated time: fake workers of known speeds and faults, milliseconds
of wall time. A change of strategy shows here before the benchmark."""

from __future__ import annotations

import math

from distributed.engine.config import Timeouts
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.jobs import JobResult, JobSpec
from distributed.engine.jobstate import EventKind, ProgressEvent
from distributed.engine.simulation import FakeWorker, SimRuntime, simulated_fleet

WORKLOAD = Workload(64, 64, 4)


def run(workers: list[FakeWorker], rt: SimRuntime, images: int, measured: bool = True) -> tuple[JobResult, Job]:
    fleet = simulated_fleet(workers, WORKLOAD if measured else None)
    spec = JobSpec("txt2img", {"prompt": "a fox"}, images, seed=1000, subseed=7, workload=WORKLOAD)
    events: list[ProgressEvent] = []
    job = Job(fleet, spec, on_event=events.append, timeouts=Timeouts(chunk_min_s=5.0), runtime=rt)
    result = job.run()
    assert all(isinstance(e.kind, EventKind) for e in events)
    return result, job


def assert_exact(result: JobResult, images: int) -> None:
    assert [image.index for image in result.images] == list(range(images))
    assert [image.seed for image in result.images] == [1000 + i for i in range(images)]
    assert [image.subseed for image in result.images] == [7 + i for i in range(images)]


def test_a_fleet_of_unequal_speeds_finishes_near_the_ideal() -> None:
    rt = SimRuntime()
    workers = [FakeWorker(name, rt, 0.3, 60.0 / ipm) for name, ipm in (("fast", 50), ("mid", 20), ("slow", 10))]
    result, _ = run(workers, rt, 48)
    assert_exact(result, 48)
    ideal = 48 / (80 / 60.0)
    assert rt.now() <= 1.15 * ideal, f"{rt.now():.1f} s for an ideal of {ideal:.1f} s"
    shares = {name: stats.images for name, stats in result.workers.items()}
    assert shares["fast"] > shares["mid"] > shares["slow"] > 0


def test_a_worker_that_dies_holding_a_chunk_loses_nothing() -> None:
    rt = SimRuntime()
    doomed = FakeWorker("doomed", rt, 0.2, 1.0, dies_at=2.5)
    result, job = run([FakeWorker("steady", rt, 0.2, 1.0), doomed], rt, 12)
    assert_exact(result, 12)
    assert result.workers["doomed"].failed_chunks >= 1
    assert not job.book.pending


def test_a_frozen_worker_is_interrupted_at_its_deadline_and_its_images_rerun() -> None:
    rt = SimRuntime()
    frozen = FakeWorker("frozen", rt, 0.2, 1.0, hangs=True)
    result, _ = run([FakeWorker("steady", rt, 0.2, 1.0), frozen], rt, 10)
    assert_exact(result, 10)
    assert result.workers["frozen"].failed_chunks >= 1
    assert "interrupt" in frozen.calls
    assert all(image.worker == "steady" for image in result.images)
    assert math.isfinite(rt.now())


def test_a_slow_worker_that_shows_progress_is_not_declared_dead() -> None:
    rt = SimRuntime()
    crawling = FakeWorker("crawling", rt, 0.2, 1.0, slowdown=8.0)  # its cost model says 8x faster than it is
    result, _ = run([crawling], rt, 6)
    assert_exact(result, 6)
    assert result.workers["crawling"].failed_chunks == 0
    assert "interrupt" not in crawling.calls


def test_unmeasured_workers_start_with_single_images_and_learn() -> None:
    rt = SimRuntime()
    workers = [FakeWorker("a", rt, 0.1, 0.5), FakeWorker("b", rt, 0.1, 2.0)]
    result, _ = run(workers, rt, 16, measured=False)
    assert_exact(result, 16)
    assert result.workers["a"].images > result.workers["b"].images


def test_event_kinds_read_as_their_names() -> None:
    assert f"{EventKind.DONE}" == str(EventKind.DONE) == "done"
    assert EventKind.DONE == "done"


def test_a_worker_refusing_the_request_is_left_out_and_nothing_is_lost() -> None:
    """A 422 naming a field (a headless worker that cannot follow one of the master's options) is that worker's
    limit, not a bad request: the job goes on without it."""
    rt = SimRuntime()
    refusing = FakeWorker("strict", rt, 0.2, 0.5, refuses="override_settings.pad_cond_uncond")
    result, job = run([refusing, FakeWorker("steady", rt, 0.2, 1.0)], rt, 8)
    assert_exact(result, 8)
    assert "override_settings.pad_cond_uncond" in result.excluded["strict"]
    assert result.workers["steady"].images == 8 and not job.book.pending
