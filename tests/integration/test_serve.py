"""`serve`: A1111's API in front of real workers, driven by real clients (webuiapi 0.9.17, requests, the CLI)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import webuiapi
from PIL import ImageChops

from distributed.compat import validate
from distributed.engine.config import FleetConfig
from distributed.engine.fleet import Fleet
from distributed.gateway.app import Gateway, create_app
from distributed.gateway.catalog import Catalog
from distributed.gateway.queue import JobQueue
from distributed.images import decode_image_bytes
from distributed.worker.threaded import ThreadServer
from tests.threadworker import ThreadWorker

SPEEDS = {"fast": 600.0, "mid": 240.0, "slow": 120.0}  # 0.1, 0.25 and 0.5 s per 64x64 4-step image
IMAGE = {"width": 64, "height": 64, "steps": 4, "sampler_name": "Euler a"}
USERS = "alice:pw1,bob:pw2"


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, ThreadWorker]]:
    started = {name: ThreadWorker(name, emulate_ipm=ipm).start() for name, ipm in SPEEDS.items()}
    yield started
    for worker in started.values():
        worker.stop()


@contextmanager
def serving(
    urls: dict[str, str], max_queue: int = 16, api_auth: str | None = None, **changed: float
) -> Iterator[tuple[str, Gateway]]:
    timeouts = {"connect_s": 2.0, "probe_s": 2.0, "chunk_min_s": 5.0, "no_worker_s": 5.0, **changed}
    config = validate(
        FleetConfig, {"workers": [{"name": n, "url": u} for n, u in urls.items()], "options": {"timeouts": timeouts}}
    )
    fleet = Fleet(config)
    gateway = Gateway(fleet, JobQueue(fleet, max_queue, 1.0), Catalog(fleet), api_auth=api_auth)
    try:
        with ThreadServer(create_app(gateway)) as server:
            yield server.url, gateway
    finally:
        gateway.close()
        fleet.close()


def answered(gateway: Gateway, name: str) -> threading.Event:
    """Set when the worker's first chunk answer has come back (to break it while it holds more work)."""
    event = threading.Event()
    client = gateway.fleet.members[name].client
    generate = client.generate

    def watched(*args: Any) -> Any:
        answer = generate(*args)
        event.set()
        return answer

    client.generate = watched  # type: ignore[method-assign]
    return event


def urls_of(workers: dict[str, ThreadWorker]) -> dict[str, str]:
    return {name: worker.url for name, worker in workers.items()}


def post(url: str, images: int, seed: int, prompt: str = "a lighthouse", **extra: Any) -> requests.Response:
    body = {"prompt": prompt, "batch_size": images, "seed": seed, **IMAGE, **extra}
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120)


def test_webuiapi_gets_every_image_exactly_as_one_worker_makes_it(workers: dict[str, ThreadWorker]) -> None:
    with serving(urls_of(workers)) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        api = webuiapi.WebUIApi(host=host, port=int(port))
        result = api.txt2img(prompt="a lighthouse", batch_size=6, seed=4000, **IMAGE)
    assert result.info["all_seeds"] == list(range(4000, 4006))
    assert len(result.images) == 6
    makers = result.info["distributed"]["image_workers"]
    assert len(set(makers)) >= 2  # the fleet shared the job
    for text, maker in zip(result.info["infotexts"], makers, strict=True):
        assert "Seed: " in text and text.endswith(f"Worker: {maker}")
    # the same request to one worker alone: the same pictures, image by image (batch sizes differ, and a batched
    # matmul may round a pixel by one level)
    alone = requests.post(
        f"{workers['mid'].url}/sdapi/v1/txt2img",
        json={"prompt": "a lighthouse", "batch_size": 6, "seed": 4000, **IMAGE},
        timeout=120,
    ).json()
    for ours, theirs in zip(result.images, alone["images"], strict=True):
        difference = ImageChops.difference(ours.convert("RGB"), decode_image_bytes(base64.b64decode(theirs)))
        assert max(high for _, high in difference.getextrema()) <= 2


@pytest.mark.parametrize("clients", [2, 10])
def test_concurrent_clients_each_get_their_own_images(workers: dict[str, ThreadWorker], clients: int) -> None:
    answers: dict[int, requests.Response] = {}

    def client(number: int) -> None:
        answers[number] = post(url, 3, 100 * number, prompt=f"client {number}")

    with serving(urls_of(workers)) as (url, gateway):
        threads = [threading.Thread(target=client, args=(n,)) for n in range(1, clients + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert gateway.queue.wait_empty(5)
    for number in range(1, clients + 1):
        response = answers[number]
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert info["all_seeds"] == [100 * number + k for k in range(3)]
        assert all(text.startswith(f"client {number}\n") for text in info["infotexts"])  # nothing from another job
        assert len(response.json()["images"]) == 3


def test_progress_and_interrupt_reach_only_the_callers_job(workers: dict[str, ThreadWorker]) -> None:
    with serving({"slow": workers["slow"].url}, api_auth=USERS) as (url, gateway):
        outcome: dict[str, requests.Response] = {}
        started = threading.Event()

        def alice() -> None:
            body = {"prompt": "long", "batch_size": 20, "seed": 1, **IMAGE}
            started.set()
            outcome["r"] = requests.post(f"{url}/sdapi/v1/txt2img", json=body, auth=("alice", "pw1"), timeout=60)

        thread = threading.Thread(target=alice)
        thread.start()
        started.wait(5)
        assert gateway.queue.wait_count(lambda count: count == 1, 10)  # alice's job is in
        assert requests.get(f"{url}/sdapi/v1/progress", timeout=5).status_code == 401
        # bob sees no job of his, and his interrupt does not touch alice's
        bob = requests.get(f"{url}/sdapi/v1/progress", auth=("bob", "pw2"), timeout=5).json()
        assert bob["state"]["job_count"] == 0
        requests.post(f"{url}/sdapi/v1/interrupt", auth=("bob", "pw2"), timeout=5)
        assert gateway.queue.wait_empty(1.0) is False  # alice's job still runs
        mine = requests.get(f"{url}/sdapi/v1/progress", auth=("alice", "pw1"), timeout=5).json()
        assert mine["state"]["job_count"] == 1 and mine["state"]["sampling_steps"] == 4
        requests.post(f"{url}/sdapi/v1/interrupt", auth=("alice", "pw1"), timeout=5)
        thread.join(20)
    response = outcome["r"]
    assert response.status_code == 200
    info = json.loads(response.json()["info"])
    assert info["distributed"]["interrupted"] is True
    assert 0 < len(response.json()["images"]) < 20  # what was made comes back
    assert info["all_seeds"] == list(range(1, 1 + len(info["all_seeds"])))


def test_a_full_queue_answers_503_with_retry_after(workers: dict[str, ThreadWorker]) -> None:
    with serving({"slow": workers["slow"].url}, max_queue=1) as (url, gateway):
        thread = threading.Thread(target=post, args=(url, 6, 1))
        thread.start()
        assert gateway.queue.wait_count(lambda count: count == 1, 10)
        refused = post(url, 1, 2)
        thread.join(30)
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]


def test_a_client_gone_mid_job_frees_its_workers_at_once(workers: dict[str, ThreadWorker]) -> None:
    with serving({"slow": workers["slow"].url}) as (url, gateway):
        with pytest.raises(requests.ReadTimeout):
            requests.post(
                f"{url}/sdapi/v1/txt2img", json={"prompt": "gone", "batch_size": 30, "seed": 1, **IMAGE}, timeout=1.5
            )
        assert gateway.queue.wait_empty(3.0)  # cancelled when the connection closed, not after 15 s of rendering
    state = requests.get(f"{workers['slow'].url}/sdapi/v1/progress", timeout=5).json()["state"]
    assert state["job_count"] == 0  # interrupted on the worker too


def test_bad_requests_name_the_model_or_field(workers: dict[str, ThreadWorker]) -> None:
    with serving(urls_of(workers)) as (url, _):
        missing = post(url, 1, 1, override_settings={"sd_model_checkpoint": "no-such-model"})
        wrong = post(url, 1, 1, steps="many")
        script = post(url, 1, 1, script_name="x/y/z plot")
        models = requests.get(f"{url}/sdapi/v1/sd-models", timeout=10).json()
        samplers = requests.get(f"{url}/sdapi/v1/samplers", timeout=10).json()
        options = requests.post(f"{url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=10)
        upscalers = requests.get(f"{url}/sdapi/v1/upscalers", timeout=10)  # the headless worker's built-in three
        page = requests.get(f"{url}/", timeout=10)
        states = {w["name"]: w["state"] for w in requests.get(f"{url}/distributed/v1/workers", timeout=10).json()}
    assert missing.status_code == 404 and "no-such-model" in missing.json()["detail"]
    assert wrong.status_code == 422 and "steps" in wrong.json()["detail"]
    assert script.status_code == 422 and "script_name" in script.json()["detail"]
    assert options.status_code == 422 and "CLIP_stop_at_last_layers" in options.json()["detail"]
    assert sorted(models[0]["workers"]) == sorted(SPEEDS)  # which worker has what
    assert "Euler a" in {s["name"] for s in samplers}
    assert page.headers["content-type"].startswith("text/html") and all(name in page.text for name in SPEEDS)
    assert [u["name"] for u in upscalers.json()] == ["None", "Lanczos", "Nearest"]
    assert sorted(upscalers.json()[0]["workers"]) == sorted(SPEEDS)
    assert set(states.values()) <= {"online", "not checked yet"}


def test_generate_server_writes_the_images(workers: dict[str, ThreadWorker], tmp_path: Path) -> None:
    with serving(urls_of(workers)) as (url, _):
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "distributed",
                "generate",
                "--server",
                url,
                "--prompt",
                "cli",
                "--images",
                "4",
                "--width",
                "64",
                "--height",
                "64",
                "--steps",
                "4",
                "--seed",
                "70",
                "--out",
                str(tmp_path),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["seeds"] == [70, 71, 72, 73] and summary["images"] == 4
    assert sum(w["images"] for w in summary["workers"].values()) == 4
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_a_worker_killed_while_two_jobs_share_it_loses_no_image() -> None:
    from distributed.cli.localfleet import LocalWorker

    doomed, survivor = (
        LocalWorker("doomed", emulate_ipm=300).launch(),
        LocalWorker("survivor", emulate_ipm=300).launch(),
    )
    try:
        doomed.wait_ready()
        survivor.wait_ready()
        with serving({"doomed": doomed.url, "survivor": survivor.url}) as (url, gateway):
            first_answer = answered(gateway, "doomed")
            answers: dict[int, requests.Response] = {}
            threads = [
                threading.Thread(target=lambda n=n: answers.__setitem__(n, post(url, 8, 1000 * n))) for n in (1, 2)
            ]
            for thread in threads:
                thread.start()
            assert first_answer.wait(30)
            doomed.kill()  # mid-job: both jobs have images on it or queued for it
            for thread in threads:
                thread.join(120)
    finally:
        doomed.stop()
        survivor.stop()
    for n in (1, 2):
        info = json.loads(answers[n].json()["info"])
        assert info["all_seeds"] == [1000 * n + k for k in range(8)]
        assert len(answers[n].json()["images"]) == 8
    failed = [
        json.loads(answers[n].json()["info"])["distributed"]["workers"]["doomed"]["failed_chunks"] for n in (1, 2)
    ]
    assert sum(failed) >= 1  # it really died holding work, which went to the survivor


def test_a_job_the_fleet_cannot_finish_hands_back_what_arrived() -> None:
    lone = ThreadWorker("lone", emulate_ipm=600).start()
    try:
        with serving({"lone": lone.url}, no_worker_s=1.0) as (url, gateway):
            first_answer = answered(gateway, "lone")
            outcome: dict[str, requests.Response] = {}
            thread = threading.Thread(target=lambda: outcome.__setitem__("r", post(url, 40, 500)))
            thread.start()
            assert first_answer.wait(30)
            lone.stop()  # the only worker is gone for good
            thread.join(60)
    finally:
        lone.stop()
    response = outcome["r"]
    assert response.status_code == 503
    body = response.json()
    assert "no worker can take them" in body["detail"] and "lone" in body["detail"]
    seeds = json.loads(body["info"])["all_seeds"]
    assert 0 < len(body["images"]) == len(seeds) < 40
    assert seeds == list(range(500, 500 + len(seeds)))
