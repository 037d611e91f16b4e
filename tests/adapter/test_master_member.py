"""The master as a full fleet member: the plan (who rendered how many images) with the master's render emulated at a
known speed, real workers beside it, workers killed and frozen mid-job, restarts and settings changed after start."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.engine.costmodel import Workload
from tests.adapter.test_script import make_p, run

WORKLOAD = Workload(64, 64, 4)
MASTER_S = 0.1  # the master's emulated seconds per image: the fastest member, as in the fleet
FAST_TIMEOUTS = {"connect_s": 0.5, "probe_s": 0.5}


def cost(seconds_per_image: float, overhead_s: float = 0.05) -> dict[str, Any]:
    return {"overhead_s": overhead_s, "seconds_per_unit": seconds_per_image / WORKLOAD.units, "samples": 4}


def write_fleet(
    shared: Any, workers: dict[str, tuple[str, float]], master: float | None = MASTER_S, **options: Any
) -> None:
    """workers.json with learned speeds, as a previous session would have saved them."""
    data = {
        "workers": [{"name": n, "url": u, "cost_model": cost(s)} for n, (u, s) in workers.items()],
        "options": options,
        "learned": {"master": cost(master, 0.0)} if master is not None else {},
    }
    Path(shared.cmd_opts.distributed_config).write_text(json.dumps(data), encoding="utf-8")


def worker_names(processed: Any) -> list[str]:
    return [
        t.split("Worker: ")[1].split(",")[0].split("\n")[0]
        for t in processed.infotexts[processed.index_of_first_image :]
    ]


@pytest.fixture()
def master_speed() -> Iterator[None]:
    from modules import processing

    processing.emulated_seconds_per_image = MASTER_S
    yield


@pytest.fixture()
def spare() -> Iterator[LocalWorker]:
    """A worker of this test's own, to kill or freeze."""
    worker = LocalWorker("spare", emulate_ipm=120).start()
    try:
        yield worker
    finally:
        if worker._process is not None and worker._process.poll() is None:
            worker._process.send_signal(signal.SIGCONT)
        worker.stop()


def assert_complete(processed: Any, seed: int, n: int) -> None:
    from modules import images

    assert processed.all_seeds == list(range(seed, seed + n))
    assert len(processed.images) - processed.index_of_first_image == n
    assert [s["seed"] for s in images.saved] == list(range(seed, seed + n))  # saved in index order


def test_batch_count_share_is_not_cut_to_whole_batches(
    webui: Any, fleet_workers: dict[str, LocalWorker], master_speed: None
) -> None:
    """8 x 3 with the master fastest: it renders about its planned share, not the 8 whole batches kept to."""
    from modules import processing

    write_fleet(webui, {"fast": (fleet_workers["fast"].url, 0.25), "slow": (fleet_workers["slow"].url, 0.5)})
    processed = run(make_p(batch_size=8, n_iter=3, seed=100), [True, [], False, False])
    assert_complete(processed, 100, 24)
    names = worker_names(processed)
    # rates 10 : 4 : 2 images per second: the master's fair share of 24 is 15
    assert names.count("master") >= 11, names
    assert all(len(batch) <= 8 for batch in processing.batches_drawn)
    assert sorted(processing.samples_drawn) == sorted(set(processing.samples_drawn))  # nothing rendered twice
    assert {names[i] for i, seed in enumerate(processed.all_seeds) if seed in processing.samples_drawn} == {"master"}


def test_the_masters_speed_survives_a_restart(
    webui: Any, fleet_workers: dict[str, LocalWorker], master_speed: None
) -> None:
    from modules import images, processing

    from distributed.webui.runtime import close_runtime, runtime

    write_fleet(webui, {"slow": (fleet_workers["slow"].url, 0.5)}, master=None)
    run(make_p(batch_size=4, n_iter=2, seed=10), [True, [], False, False])
    saved = json.loads(Path(webui.cmd_opts.distributed_config).read_text(encoding="utf-8"))
    per_image = saved["learned"]["master"]["seconds_per_unit"] * WORKLOAD.units
    assert 0.05 < per_image < 0.3, per_image  # learned from its own batches (0.1 s per image emulated)
    assert saved["learned"]["master"]["measured_at"] == "64x64, 4 steps"

    close_runtime()  # a webui restart: the first job plans with the saved speed, not the workers' median
    assert runtime().manager.master_cost is not None
    processing.samples_drawn.clear()
    images.saved.clear()
    processed = run(make_p(batch_size=8, n_iter=2, seed=20), [True, [], False, False])
    assert_complete(processed, 20, 16)
    assert worker_names(processed).count("master") >= 10  # 10 : 2 images per second


def test_a_killed_worker_costs_the_survivors_ideal(
    webui: Any, fleet_workers: dict[str, LocalWorker], spare: LocalWorker, master_speed: None
) -> None:
    """The spare is planned a large share (it claims to be fast) and dies: the master renders what it lost."""
    write_fleet(webui, {"spare": (spare.url, 0.1), "slow": (fleet_workers["slow"].url, 0.5)}, timeouts=FAST_TIMEOUTS)
    threading.Timer(0.6, spare.kill).start()
    processed = run(make_p(batch_size=8, n_iter=3, seed=200), [True, [], False, False])
    assert_complete(processed, 200, 24)
    names = worker_names(processed)
    assert names.count("master") >= 13, names  # its own share (about 11) and the spare's lost images


def test_a_frozen_worker_is_left_behind_and_costs_later_jobs_nothing(
    webui: Any, fleet_workers: dict[str, LocalWorker], spare: LocalWorker, master_speed: None
) -> None:
    from modules import images, processing

    write_fleet(webui, {"spare": (spare.url, 0.1), "slow": (fleet_workers["slow"].url, 0.5)}, timeouts=FAST_TIMEOUTS)
    assert spare._process is not None
    threading.Timer(0.6, spare._process.send_signal, args=(signal.SIGSTOP,)).start()
    processed = run(make_p(batch_size=8, n_iter=3, seed=300), [True, [], False, False])
    assert_complete(processed, 300, 24)
    assert worker_names(processed).count("master") >= 13

    # the next job: the frozen worker is offline and asked in the background; the master starts at once
    processing.samples_drawn.clear()
    images.saved.clear()
    started = time.monotonic()
    first_sample: list[float] = []
    original = processing.StableDiffusionProcessing.sample

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        first_sample.append(time.monotonic() - started)
        return original(self, *args, **kwargs)

    processing.StableDiffusionProcessing.sample = timed  # type: ignore[method-assign]
    try:
        processed = run(make_p(batch_size=1, seed=400), [True, [], False, False])
    finally:
        processing.StableDiffusionProcessing.sample = original  # type: ignore[method-assign]
    assert_complete(processed, 400, 1)
    assert first_sample and first_sample[0] < 0.5, first_sample  # no network wait before the master's batch


def test_every_worker_gone_the_master_renders_every_image(webui: Any, master_speed: None) -> None:
    from modules import processing

    write_fleet(webui, {"gone": (f"http://127.0.0.1:{free_port()}", 0.01)}, timeouts={"no_worker_s": 0})
    processed = run(make_p(batch_size=4, seed=40), [True, [], True, False])  # orchestrator-only, even so
    assert_complete(processed, 40, 4)
    assert sorted(processing.samples_drawn) == [40, 41, 42, 43]
    info = json.loads(processed.js())["distributed"]
    assert any("gone" in line for line in info["failed"]), info


def test_interrupt_stops_the_workers_rendering(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    """30 images at 120 ipm take 15 s; after Interrupt the worker itself is idle again within a second, and what the
    master and the worker made before it comes back."""
    slow = fleet_workers["slow"]
    write_fleet(webui, {"slow": (slow.url, 0.5)})
    timer = threading.Timer(1.5, webui.state.interrupt)
    timer.start()
    try:
        processed = run(make_p(batch_size=30, seed=1), [True, [], False, False])
    finally:
        timer.cancel()
    texts = processed.infotexts[-(len(processed.images) - processed.index_of_first_image) :]
    assert any("Worker: master" in text for text in texts), f"the master's images were dropped: {texts}"
    counted = json.loads(processed.js())["distributed"]["workers"]["master"]["images"]
    assert counted == sum("Worker: master" in text for text in texts), "the report miscounts the master's images"
    deadline = time.monotonic() + 1.0
    busy = True
    while busy and time.monotonic() < deadline:
        state = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=5).json()["state"]
        busy = bool(state.get("job_count"))
        threading.Event().wait(0.1)
    assert not busy, "the worker kept rendering an interrupted job"


def test_settings_changed_after_start_apply_to_the_next_job(
    webui: Any, fleet_workers: dict[str, LocalWorker], master_speed: None
) -> None:
    from modules import processing

    from distributed.engine.config import FleetOptions
    from distributed.master.views import WorkerInput
    from distributed.webui.runtime import runtime
    from distributed.webui.ui import AS_SAVED

    write_fleet(webui, {})  # started with no workers
    manager = runtime().manager
    defaults = [True, [], AS_SAVED, AS_SAVED]  # what A1111 computed for API calls at start
    manager.add(WorkerInput(name="fast", url=fleet_workers["fast"].url))
    manager.set_options(FleetOptions(orchestrator_only=True))
    processed = run(make_p(batch_size=4, seed=60), defaults)
    assert_complete(processed, 60, 4)
    assert processing.samples_drawn == []  # orchestrator-only, set after start, applied to an API-default job
    assert set(worker_names(processed)) == {"fast"}


def test_the_master_is_benchmarked_through_its_own_api(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    """The tab's "Benchmark this machine": a request to the webui's own API (here a worker standing in for it, at
    240 images/min), outside any generation; the fit becomes the master's speed and is saved."""
    from distributed.webui.runtime import own_api, runtime

    write_fleet(webui, {}, master=None)
    manager = runtime().manager
    outcome = manager.benchmark_master(fleet_workers["fast"].url, None, WORKLOAD, budget_s=2.0, request={})
    assert outcome.error is None and outcome.cost is not None
    assert 0.15 < outcome.cost.per_image(WORKLOAD) < 0.5  # 0.25 s emulated
    saved = json.loads(Path(webui.cmd_opts.distributed_config).read_text(encoding="utf-8"))
    assert saved["learned"]["master"]["measured_at"] == "64x64, 4 steps"
    assert manager.master_cost is outcome.cost

    webui.cmd_opts.api, webui.cmd_opts.port = False, None
    assert own_api(webui.cmd_opts).url is None and "--api" in (own_api(webui.cmd_opts).missing or "")
    webui.cmd_opts.api, webui.cmd_opts.port, webui.cmd_opts.api_auth = True, 7870, "u:p"
    try:
        assert own_api(webui.cmd_opts).url == "http://127.0.0.1:7870" and own_api(webui.cmd_opts).auth == ("u", "p")
    finally:
        webui.cmd_opts.api, webui.cmd_opts.port, webui.cmd_opts.api_auth = False, None, None
