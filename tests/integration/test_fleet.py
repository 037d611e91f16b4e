"""The core on real workers: a 5:2:1 fleet, a worker killed mid-job, a frozen one, 401, a missing model, interrupt."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distributed.cli.localfleet import LocalWorker, start_all
from distributed.compat import validate
from distributed.engine.config import FleetConfig, load_config
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job, ProgressEvent
from distributed.engine.fleet import Fleet, WorkerState
from distributed.engine.jobs import JobResult, JobSpec
from distributed.errors import NoWorkersError
from distributed.images import decode_image_bytes, png_parameters
from distributed.infotext import parse_infotext
from tests.faults import fake_worker, hangs_on_generation
from tests.helpers import max_diff, ok, txt2img
from tests.integration.conftest import AUTH

SPEEDS = {"fast": 60.0, "medium": 24.0, "slow": 12.0}


@pytest.fixture(scope="module")
def fleet_workers() -> Iterator[dict[str, LocalWorker]]:
    workers = {name: LocalWorker(name, emulate_ipm=ipm, threads=1) for name, ipm in SPEEDS.items()}
    try:
        start_all(list(workers.values()))
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


def _spec(images: int, seed: int = 1000, **payload: object) -> JobSpec:
    return JobSpec(
        kind="txt2img",
        payload={"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler a", **payload},
        images=images,
        seed=seed,
        subseed=seed,
        workload=Workload(64, 64, 4),
    )


def _fleet(workers: dict[str, str], **options: object) -> Fleet:
    timeouts = {"connect_s": 2.0, "probe_s": 1.5, "chunk_min_s": 10.0, "no_worker_s": 4.0, **options}
    data = {"workers": [{"name": n, "url": u} for n, u in workers.items()], "options": {"timeouts": timeouts}}
    return Fleet(validate(FleetConfig, data))


def _check_complete(result: JobResult, images: int, seed: int) -> None:
    assert [image.index for image in result.requested] == list(range(images))
    assert [image.seed for image in result.requested] == list(range(seed, seed + images))
    for image in result.requested:
        params = parse_infotext(png_parameters(decode_image_bytes(image.png)) or "")[2]
        assert params["Seed"] == str(image.seed)


def test_generate_cli_on_an_unequal_fleet(fleet_workers: dict[str, LocalWorker], tmp_path: Path) -> None:
    remotes = [arg for w in fleet_workers.values() for arg in ("--remote", f"{w.name}={w.url}")]
    command = [
        sys.executable,
        "-m",
        "distributed",
        "generate",
        *remotes,
        "--prompt",
        "a lighthouse",
        "--images",
        "24",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "4",
        "--seed",
        "5000",
        "--out",
        str(tmp_path),
        "--json",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["images"] == 24
    assert summary["seeds"] == list(range(5000, 5024))
    assert sum(w["images"] for w in summary["workers"].values()) == 24
    assert summary["workers"]["fast"]["images"] > summary["workers"]["slow"]["images"]
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 24
    for index, path in enumerate(files):
        assert path.name.startswith(f"{index:05d}-{5000 + index}-")
        assert parse_infotext(png_parameters(decode_image_bytes(path.read_bytes())) or "")[2]["Seed"] == str(
            5000 + index
        )
    # any image equals what a single machine makes for its seed
    direct = ok(txt2img(fleet_workers["fast"].url, prompt="a lighthouse", seed=5023, sampler_name="Euler a"))
    import base64

    assert max_diff(base64.b64encode(files[23].read_bytes()).decode(), direct["images"][0]) <= 1


def test_a_killed_worker_loses_nothing(tmp_path: Path) -> None:
    workers = {n: LocalWorker(f"kill-{n}", emulate_ipm=ipm, threads=1) for n, ipm in (("a", 60.0), ("b", 60.0))}
    try:
        start_all(list(workers.values()))
        fleet = _fleet({name: w.url for name, w in workers.items()})
        victim_busy = threading.Event()

        def watch(event: ProgressEvent) -> None:
            if event.worker == "a" and event.kind == "started" and event.done >= 2:
                victim_busy.set()

        job = Job(fleet, _spec(16, seed=77), on_event=watch)
        killer = threading.Thread(target=lambda: victim_busy.wait(60) and workers["a"].kill(), daemon=True)
        killer.start()
        result = job.run()
        killer.join(5)
    finally:
        for worker in workers.values():
            worker.stop()
    _check_complete(result, 16, 77)
    assert result.workers["a"].failed_chunks >= 1
    assert any("'a'" in failure for failure in result.failures)
    assert fleet.members["a"].state == WorkerState.OFFLINE


def test_a_frozen_worker_is_abandoned_and_its_images_made_elsewhere(fleet_workers: dict[str, LocalWorker]) -> None:
    with fake_worker(hangs_on_generation) as frozen_url:
        fleet = _fleet({"fast": fleet_workers["fast"].url, "frozen": frozen_url})
        started = time.monotonic()
        result = Job(fleet, _spec(6, seed=300)).run()
        elapsed = time.monotonic() - started
    _check_complete(result, 6, 300)
    assert result.workers["frozen"].failed_chunks == 1
    assert fleet.members["frozen"].state == WorkerState.OFFLINE
    # the chunk was given up on for its unanswered progress calls (later probes may have failed too)
    assert any("frozen" in f and "stopped answering" in f for f in result.failures), result.failures
    assert elapsed < 30  # found dead by its unanswered progress calls, long before the 10 s + 3x chunk deadline


def test_a_worker_refusing_auth_is_left_out_with_the_reason(
    twin: LocalWorker, fleet_workers: dict[str, LocalWorker]
) -> None:
    fleet = _fleet({"medium": fleet_workers["medium"].url, "locked": twin.url})
    result = Job(fleet, _spec(3, seed=40)).run()
    _check_complete(result, 3, 40)
    assert fleet.members["locked"].state == WorkerState.AUTH_REFUSED
    assert result.workers["locked"].images == 0


def test_auth_from_config_works(twin: LocalWorker) -> None:
    data = {"workers": [{"name": "locked", "url": twin.url, "auth": {"user": AUTH[0], "password": AUTH[1]}}]}
    result = Job(Fleet(validate(FleetConfig, data)), _spec(2, seed=41)).run()
    _check_complete(result, 2, 41)


def _basic(user: str, password: str) -> str:
    """The Authorization header's value for these credentials, as it travels."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_secrets_stay_out_of_debug_logs_from_reading_the_file_to_the_jobs_end(
    twin: LocalWorker, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debug logging on before workers.json is read and the clients are built; a job runs on a worker that
    requires auth (from the file, from an env variable) beside one whose password it refuses."""
    caplog.set_level(logging.DEBUG, logger="distributed")
    user, password = AUTH
    wrong = "wr0ng-pa55-that-must-not-leak"
    monkeypatch.setenv("DISTRIBUTED_TEST_SECRET", password)
    path = tmp_path / "workers.json"
    workers = [
        {"name": "file", "url": twin.url, "auth": {"user": user, "password": password}},
        {"name": "env", "url": twin.url, "auth": {"user": user, "password_env": "DISTRIBUTED_TEST_SECRET"}},
        {"name": "wrong", "url": twin.url, "auth": {"user": user, "password": wrong}},
    ]
    path.write_text(json.dumps({"workers": workers, "options": {"timeouts": {"no_worker_s": 4.0}}}), encoding="utf-8")
    path.chmod(0o600)
    config = load_config(path)
    fleet = Fleet(config)
    result = Job(fleet, _spec(4, seed=60)).run()

    _check_complete(result, 4, 60)
    assert result.workers["file"].images + result.workers["env"].images == 4
    assert fleet.members["wrong"].state == WorkerState.AUTH_REFUSED
    refused = Fleet(validate(FleetConfig, {"workers": workers[2:]}))  # a job no worker can take ends in an error
    with pytest.raises(NoWorkersError, match="HTTP 401") as raised:
        Job(refused, _spec(1, seed=64)).run()
    said = [record.getMessage() for record in caplog.records]
    assert any(line.startswith(f"POST {twin.url}/sdapi/v1/txt2img -> 200") for line in said), said  # debug is on
    texts = [caplog.text, *(repr(vars(record)) for record in caplog.records), *said, str(raised.value)]
    texts += [*result.failures, *result.excluded.values(), *(str(member.status) for member in fleet)]
    texts += [repr(config), str(config)]
    for secret in (password, wrong, _basic(user, password), _basic(user, wrong)):
        leaks = [text for text in texts if secret in text]
        assert leaks == [], f"{secret!r} in {leaks[0][:300]!r}"


def test_a_worker_without_the_model_is_left_out(worker: LocalWorker, fleet_workers: dict[str, LocalWorker]) -> None:
    # `worker` has the "other" checkpoint; the emulated fleet workers only have tiny
    fleet = _fleet({"has-it": worker.url, "lacks-it": fleet_workers["fast"].url})
    spec = _spec(4, seed=60, override_settings={"sd_model_checkpoint": "other"})
    result = Job(fleet, spec).run()
    _check_complete(result, 4, 60)
    assert {image.worker for image in result.requested} == {"has-it"}
    assert fleet.members["lacks-it"].state == WorkerState.MODEL_MISSING
    assert "other" in (fleet.members["lacks-it"].status.last_error or "")


def test_interrupt_reaches_every_worker_and_returns_within_a_second(fleet_workers: dict[str, LocalWorker]) -> None:
    fleet = _fleet({name: w.url for name, w in fleet_workers.items()})
    all_busy = threading.Event()
    started: set[str] = set()

    def watch(event: ProgressEvent) -> None:
        if event.kind == "progress" and event.step >= 1:
            started.add(event.worker)
            if len(started) == 3:
                all_busy.set()

    job = Job(fleet, _spec(24, seed=90, steps=16), on_event=watch)
    outcome: dict[str, object] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=job.run(), end=time.monotonic()))
    runner.start()
    assert all_busy.wait(60)
    asked = time.monotonic()
    job.interrupt()
    runner.join(10)
    result = outcome["result"]
    assert isinstance(result, JobResult)
    assert result.interrupted
    assert float(outcome["end"]) - asked < 1.0  # type: ignore[arg-type]
    assert len(result.requested) < 24
    for worker in fleet_workers.values():  # each worker stopped its chunk: all idle again at once
        progress = __import__("requests").get(f"{worker.url}/sdapi/v1/progress", timeout=5).json()
        deadline = time.monotonic() + 3
        while progress["state"]["job_count"] and time.monotonic() < deadline:
            threading.Event().wait(0.1)
            progress = __import__("requests").get(f"{worker.url}/sdapi/v1/progress", timeout=5).json()
        assert progress["state"]["job_count"] == 0, worker.name


def test_no_reachable_worker_is_a_clear_error() -> None:
    with fake_worker(lambda method, path, body: None) as silent:
        fleet = _fleet({"gone": "http://127.0.0.1:9", "silent": silent})
        started = time.monotonic()
        with pytest.raises(NoWorkersError) as raised:
            Job(fleet, _spec(2)).run()
    assert time.monotonic() - started < 30
    assert "gone" in str(raised.value) and "silent" in str(raised.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "distributed", "generate", "--prompt", "x", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_generate_cli_refuses_bad_flags(tmp_path: Path) -> None:
    bad_remote = _cli("--out", str(tmp_path), "--images", "2", "--remote", "nourl")
    assert bad_remote.returncode == 2
    assert "--remote" in bad_remote.stderr and "NAME=URL" in bad_remote.stderr
    zero = _cli("--out", str(tmp_path), "--images", "0", "--remote", "a=http://127.0.0.1:9")
    assert zero.returncode == 2
    assert "--images" in zero.stderr
    broken = tmp_path / "workers.json"
    broken.write_text('{"workers": [{"name": "a"}]}', encoding="utf-8")
    bad_config = _cli("--out", str(tmp_path), "--images", "1", "--config", str(broken))
    assert bad_config.returncode == 2
    assert str(broken) in bad_config.stderr and "'a'" in bad_config.stderr and "url" in bad_config.stderr


def test_a_job_that_cannot_finish_still_hands_back_what_arrived() -> None:
    with LocalWorker("lonely", emulate_ipm=120, threads=1) as lonely:
        fleet = _fleet({"lonely": lonely.url})

        def kill_after_first(event: ProgressEvent) -> None:
            if event.kind == "done":
                lonely.kill()

        with pytest.raises(NoWorkersError) as raised:
            Job(fleet, _spec(6, seed=500), on_event=kill_after_first).run()
    partial = raised.value.partial
    assert isinstance(partial, JobResult)
    assert partial.images, "the first chunk's images were lost"
    assert [image.seed for image in partial.images] == [500 + image.index for image in partial.images]
    assert "lonely" in str(raised.value)
