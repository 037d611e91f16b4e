"""The fault matrix: a proxy injects each fault between the master and a real worker; nothing may be lost.

Set DISTRIBUTED_RELIABILITY_REPORT=docs/reliability.md to write the results table (the committed one came so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.compat import validate
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobSpec
from tests.faultproxy import Fault, fault_proxy
from tests.helpers import self_signed
from tests.threadworker import ThreadWorker

TIMEOUTS = {"connect_s": 1.0, "probe_s": 1.0, "chunk_min_s": 3.0, "chunk_factor": 2.0, "no_worker_s": 5.0}
ROWS: list[tuple[str, str, str, str, str, str]] = []


@pytest.fixture(scope="module")
def backend() -> Iterator[ThreadWorker]:
    """The real worker behind the proxy (fast: the faults, not the rendering, should take the time)."""
    with ThreadWorker("backend", emulate_ipm=240) as worker:
        yield worker


def _spec(images: int, seed: int) -> JobSpec:
    return JobSpec(
        "txt2img",
        {"prompt": "fault", "width": 64, "height": 64, "steps": 4},
        images,
        seed,
        seed,
        workload=Workload(64, 64, 4),
    )


def _fleet(urls: dict[str, str], costs: bool = True, verify_tls: bool = True) -> Fleet:
    workers = [{"name": n, "url": u, "verify_tls": verify_tls} for n, u in urls.items()]
    data = {"workers": workers, "options": {"timeouts": TIMEOUTS}}
    if costs:  # known, equal speeds: the faulty worker surely gets work
        for worker in data["workers"]:
            worker["cost_model"] = {"overhead_s": 0.05, "seconds_per_unit": 0.25 / Workload(64, 64, 4).units}
    return Fleet(validate(FleetConfig, data))


EXPECTED = {
    Fault.REFUSE: "connection refused",
    Fault.DROP: "dropped",
    Fault.HANG: "stopped answering",
    Fault.TRICKLE: "deadline",
    Fault.HTTP_500: "HTTP 500",
    Fault.MALFORMED_JSON: "not JSON",
    Fault.WRONG_COUNT: "images for a chunk",
    Fault.NOT_PNG: "not a PNG",
    Fault.UNAUTHORIZED: "401",
    Fault.TLS: "TLS",
}


@pytest.mark.parametrize("fault", list(EXPECTED), ids=[f.name.lower() for f in EXPECTED])
def test_fault_matrix(fault: Fault, slow: ThreadWorker, backend: ThreadWorker, tmp_path: Path) -> None:
    """Each fault starts with the faulty worker's first chunk: the chunk is lost and must be re-run elsewhere."""
    tls = self_signed(tmp_path) if fault == Fault.TLS else None
    with fault_proxy(backend.url, tls=tls) as proxy:
        proxy.arm(fault)
        fleet = _fleet({"healthy": slow.url, "faulty": proxy.url}, verify_tls=tls is None)
        started = time.monotonic()
        result = Job(fleet, _spec(6, 700)).run()
        elapsed = time.monotonic() - started
    assert [image.seed for image in result.requested] == list(range(700, 706))
    assert result.workers["faulty"].failed_chunks >= 1, "the fault never met a chunk"
    member = fleet.members["faulty"]
    messages = [*result.failures, member.status.last_error or ""]
    named = [m for m in messages if "'faulty'" in m and EXPECTED[fault].lower() in m.lower()]
    assert named, messages
    assert elapsed < 25
    lost = str(result.workers["faulty"].failed_chunks)
    delivered = f"{len(result.requested)}/6"
    ROWS.append((fault.value, lost, delivered, f"{elapsed:.1f} s", member.state.value, named[0][:110]))


def test_a_restarted_worker_is_readmitted_by_the_probe(slow: ThreadWorker) -> None:
    port = free_port()
    first = LocalWorker("phoenix", port=port, threads=1, emulate_ipm=120).start()
    fleet = _fleet({"steady": slow.url, "phoenix": first.url})
    events: list[str] = []
    restarted: dict[str, LocalWorker] = {}

    def on_event(event: object) -> None:
        kind, worker = getattr(event, "kind", ""), getattr(event, "worker", "")
        events.append(f"{worker}:{kind}")
        if worker == "phoenix" and kind == "done" and "killed" not in restarted:
            first.kill()
            restarted["killed"] = first
            restarted["new"] = LocalWorker("phoenix", port=port, threads=1, emulate_ipm=120).launch()

    try:
        result = Job(fleet, _spec(24, 900), on_event=on_event).run()
    finally:
        first.stop()
        if "new" in restarted:
            restarted["new"].stop()
    assert [image.seed for image in result.requested] == list(range(900, 924))
    assert "phoenix:state" in events  # back online through the health probe, without anyone asking
    failed_at = events.index("phoenix:failed")
    assert "phoenix:done" in events[failed_at:], f"no chunk finished on the restarted worker: {events}"


def test_tls_verification(tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    with LocalWorker("https", threads=1, tls=(certificate, key)) as secure:
        strict = Fleet(
            validate(
                FleetConfig, {"workers": [{"name": "https", "url": secure.url}], "options": {"timeouts": TIMEOUTS}}
            )
        )
        with pytest.raises(Exception, match=r"TLS|certificate|no worker"):
            Job(strict, _spec(1, 1)).run()
        assert "TLS" in (strict.members["https"].status.last_error or "")
        skipped = Fleet(
            validate(FleetConfig, {"workers": [{"name": "https", "url": secure.url}]}), verify_tls_default=False
        )
        assert len(Job(skipped, _spec(2, 1)).run().requested) == 2
        per_worker = Fleet(
            validate(FleetConfig, {"workers": [{"name": "https", "url": secure.url, "verify_tls": False}]})
        )
        assert len(Job(per_worker, _spec(1, 1)).run().requested) == 1
        overridden = Fleet(
            validate(
                FleetConfig,
                {
                    "workers": [{"name": "https", "url": secure.url, "verify_tls": True}],
                    "options": {"timeouts": TIMEOUTS},
                },
            ),
            verify_tls_default=False,
        )
        with pytest.raises(Exception, match=r"TLS|certificate|no worker"):
            Job(overridden, _spec(1, 1)).run()


def test_write_report() -> None:
    """Runs last in this module: the table of what each fault did (to a file only when asked)."""
    target = os.environ.get("DISTRIBUTED_RELIABILITY_REPORT")
    if not target or not ROWS:
        pytest.skip("set DISTRIBUTED_RELIABILITY_REPORT to write the table")
    lines = [
        "| fault (from the faulty worker's first chunk on) | its chunks lost | images delivered | job time"
        " | faulty worker ends | message |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} | `{f}` |" for a, b, c, d, e, f in ROWS]
    Path(target).write_text(_REPORT_HEAD + "\n".join(lines) + "\n", encoding="utf-8")


_REPORT_HEAD = """# Reliability

Written by `DISTRIBUTED_RELIABILITY_REPORT=docs/reliability.md pytest tests/integration/test_reliability.py`.
Each row is one job of 6 images on two workers: a healthy one, and one behind a fault-injecting proxy
(`tests/faultproxy.py`) in front of a real headless worker. The proxy is healthy until the faulty worker's first
chunk arrives; the fault starts with that chunk (refused and TLS: the chunk's connection dies and the port then
refuses connections or fails TLS handshakes; 401 and hang: every route from then on), so every row loses at least
one chunk, and the test checks it. Timeouts as in the test: connect 1 s, probe 1 s, chunk deadline
3 s + 2 x predicted. Every image arrived in every row, with its own seed. The healthy worker alone
needs 6 s for the 6 images, so a job time near 6 s means the fault cost nothing. "online" at the end means the
faulty worker answered its health probe again and was re-admitted (its health endpoint still works); the failed
chunk was re-run elsewhere either way.

"""
