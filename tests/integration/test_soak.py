"""Soak: 200 consecutive small jobs on three workers with random faults; no lost image, no leak, flat memory."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from distributed.cli.localfleet import LocalWorker, start_all
from distributed.compat import validate
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobSpec
from distributed.errors import NoWorkersError
from tests.faultproxy import Fault, FaultProxy

JOBS = 200
# mostly quick faults; the slow ones (a hang costs a progress timeout) now and then
FAULTS = [Fault.NONE] * 6 + [
    Fault.HTTP_500,
    Fault.MALFORMED_JSON,
    Fault.WRONG_COUNT,
    Fault.NOT_PNG,
    Fault.DROP,
    Fault.UNAUTHORIZED,
    Fault.HANG,
]
TIMEOUTS = {"connect_s": 1.0, "probe_s": 0.5, "chunk_min_s": 2.0, "chunk_factor": 2.0, "no_worker_s": 5.0}
MEMORY_BOUND_MB = 40


@pytest.fixture(scope="module")
def proxied() -> Iterator[list[FaultProxy]]:
    workers = [LocalWorker(f"soak{i}", threads=1, emulate_ipm=600) for i in range(3)]
    proxies = []
    try:
        start_all(workers)
        proxies = [FaultProxy(worker.url).start() for worker in workers]
        yield proxies
    finally:
        for proxy in proxies:
            proxy.stop()
        for worker in workers:
            worker.stop()


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed between listing and reading
            continue
    return count


def _master_threads() -> int:
    """Threads of the master (the proxies' request threads run in this process too, and are not counted)."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" not in t.name)


def _settle(baseline_threads: int, deadline_s: float = 15.0) -> int:
    """Abandoned HTTP calls end at their read timeout: wait (bounded) for the thread count to come back."""
    end = time.monotonic() + deadline_s
    pause = threading.Event()
    while _master_threads() > baseline_threads and time.monotonic() < end:
        pause.wait(0.1)
    return _master_threads()


@pytest.mark.slow
def test_soak_random_faults(proxied: list[FaultProxy]) -> None:
    rng = random.Random(1234)
    data = {
        "workers": [{"name": f"soak{i}", "url": p.url} for i, p in enumerate(proxied)],
        "options": {"timeouts": TIMEOUTS},
    }
    fleet = Fleet(validate(FleetConfig, data))
    process = psutil.Process()

    def one_job(number: int) -> int:
        for proxy in proxied:
            proxy.fault, proxy.everything = Fault.NONE, False
        victim = rng.choice(proxied)
        victim.fault = rng.choice(FAULTS)
        victim.everything = victim.fault == Fault.UNAUTHORIZED
        spec = JobSpec(
            "txt2img",
            {"prompt": "soak", "width": 64, "height": 64, "steps": 4},
            3,
            10 * number,
            10 * number,
            workload=Workload(64, 64, 4),
        )
        result = Job(fleet, spec).run()
        assert [image.seed for image in result.requested] == [10 * number + k for k in range(3)], victim.fault
        return len(result.requested)

    for number in range(10):  # warm-up: pools, caches, first connections
        one_job(number)
    for proxy in proxied:
        proxy.fault = Fault.NONE
        proxy.unhang()
    baseline_threads = _settle(_master_threads())
    baseline_sockets = _open_sockets()
    baseline_rss = process.memory_info().rss
    delivered = 0
    for number in range(10, 10 + JOBS):
        try:
            delivered += one_job(number)
        except NoWorkersError as exc:  # every worker faulty at once cannot happen with one victim per job
            pytest.fail(f"job {number}: {exc}")
    for proxy in proxied:
        proxy.fault = Fault.NONE
        proxy.unhang()
    assert delivered == 3 * JOBS
    threads = _settle(baseline_threads)
    growth_mb = (process.memory_info().rss - baseline_rss) / 2**20
    fleet.close()
    assert threads <= baseline_threads, f"threads {baseline_threads} -> {threads}"
    assert _open_sockets() <= baseline_sockets + 3 * 2, "sockets leaked"
    assert growth_mb < MEMORY_BOUND_MB, f"memory grew {growth_mb:.1f} MB over {JOBS} jobs"
