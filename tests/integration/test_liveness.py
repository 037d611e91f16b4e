"""Liveness: a slow but advancing worker is never declared dead; a stuck chunk is interrupted on its worker, retried
with a longer deadline, and a worker that keeps missing deadlines sits the job out; nothing is left rendering."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from distributed.compat import validate
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobSpec
from distributed.errors import NoWorkersError
from tests.faultproxy import Fault, fault_proxy
from tests.threadworker import ThreadWorker

TIMEOUTS = {"connect_s": 1.0, "probe_s": 1.0, "chunk_min_s": 2.0, "chunk_factor": 1.0, "no_worker_s": 0.0}


@pytest.fixture(scope="module")
def slow() -> Iterator[ThreadWorker]:
    """5 s per 64x64, 4-step image: longer than any deadline an unmeasured worker gets here."""
    with ThreadWorker("slow", emulate_ipm=12) as worker:
        yield worker


def _fleet(urls: dict[str, str], **timeouts: float) -> Fleet:  # no cost models: nobody has shown its speed yet
    options = {"timeouts": {**TIMEOUTS, **timeouts}}
    data = {"workers": [{"name": n, "url": u} for n, u in urls.items()], "options": options}
    return Fleet(validate(FleetConfig, data))


def _spec(images: int, seed: int) -> JobSpec:
    payload = {"prompt": "liveness", "width": 64, "height": 64, "steps": 4}
    return JobSpec("txt2img", payload, images, seed, seed, workload=Workload(64, 64, 4))


def _idle(url: str) -> bool:
    return not requests.get(f"{url}/sdapi/v1/progress", timeout=5).json()["state"]["job_count"]


def test_a_slow_worker_that_advances_keeps_its_chunk(slow: ThreadWorker) -> None:
    result = Job(_fleet({"slow": slow.url}), _spec(1, 10)).run()
    assert [image.seed for image in result.requested] == [10]
    assert result.workers["slow"].failed_chunks == 0, result.failures  # its deadline grew with its steps
    assert _idle(slow.url)


def test_a_stuck_chunk_is_interrupted_retried_longer_and_its_worker_held_out(slow: ThreadWorker) -> None:
    """The proxy swallows generation calls (the worker answers progress, idle): no progress, so no extension."""
    with fault_proxy(slow.url) as proxy:
        proxy.fault = Fault.HANG
        job = Job(_fleet({"stuck": proxy.url}, no_worker_s=20.0), _spec(2, 20))  # it answers probes: re-admitted
        with pytest.raises(NoWorkersError, match="missed 2 deadlines") as caught:
            job.run()
        sent = [p for p in proxy.paths_seen if p.endswith(("/txt2img", "/interrupt"))]
    assert sent[:4] == ["POST /sdapi/v1/txt2img", "POST /sdapi/v1/interrupt"] * 2, sent
    assert "passed their deadline" in str(caught.value)
    assert caught.value.partial is not None and caught.value.partial.requested == []
    # the second try had twice the deadline: the job's failures say how long each waited
    waits = [float(line.split("after ")[1].split(" s")[0]) for line in job._failures if "after " in line]
    assert len(waits) == 2 and waits[1] >= 1.8 * waits[0], waits


def test_a_worker_busy_elsewhere_gets_work_only_once_it_shows_it_is_free(slow: ThreadWorker) -> None:
    """`slow` renders someone else's 2 images with 4 more queued behind them (30 s of work). Its progress, half-way
    into the first request, suggests it is free in about 11 s; nothing of ours may wait in its queue meanwhile."""
    import threading

    def other(seed: int, images: int) -> None:
        body = {"prompt": "someone else", "width": 64, "height": 64, "steps": 4, "batch_size": images, "seed": seed}
        requests.post(f"{slow.url}/sdapi/v1/txt2img", json=body, timeout=120)

    others = [threading.Thread(target=other, args=(seed, n), daemon=True) for seed, n in ((1, 2), (2, 4))]
    with ThreadWorker("idle", emulate_ipm=12) as idle:
        for thread in others:
            thread.start()
            threading.Event().wait(0.3)  # in this order on the worker
        threading.Event().wait(5.3)  # half of the first request done; the second still queued
        known = {"overhead_s": 0.05, "seconds_per_unit": 5.0 / Workload(64, 64, 4).units}
        data = {
            "workers": [{"name": "busy", "url": slow.url, "cost_model": known},
                        {"name": "idle", "url": idle.url, "cost_model": known}],
            "options": {"timeouts": TIMEOUTS},
        }  # fmt: skip
        result = Job(Fleet(validate(FleetConfig, data)), _spec(4, 30)).run()
    for thread in others:
        thread.join(timeout=60)
    assert [image.seed for image in result.requested] == [30, 31, 32, 33]
    # the other work ends about 24 s into our job; before that, nothing of ours was sent to `busy`
    starts = [start for start, _, _ in result.workers["busy"].spans]
    assert all(start > 20.0 for start in starts), (starts, {n: s.images for n, s in result.workers.items()})


def test_the_busy_estimate_counts_the_queue() -> None:
    from distributed.engine.admission import busy_elsewhere_s

    assert busy_elsewhere_s({"state": {"job_count": 0}}) is None
    running = {"progress": 0.5, "eta_relative": 5.0, "state": {"job_count": 1}}
    assert busy_elsewhere_s(running) == 5.0  # A1111 shows no queue: its ETA is all we know
    assert busy_elsewhere_s({**running, "state": {"job_count": 1, "queued": 2}}) == 5.0 + 2 * 10.0
