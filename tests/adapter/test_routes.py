"""The REST routes on a real HTTP server, on both webuis' fastapi and pydantic: secrets, auth, concurrent saves."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from distributed.cli.localfleet import LocalWorker
from distributed.master.manager import FleetManager
from distributed.master.views import WorkerInput
from distributed.webui.routes import add_routes

SECRET = "hunter2-do-not-show"
TIMEOUT = (5, 120)


def serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts: no start-up polling needed
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture()
def manager(tmp_path: Path) -> Iterator[FleetManager]:
    fleet = FleetManager(tmp_path / "workers.json", [])
    yield fleet
    fleet.close()


@pytest.fixture()
def api(manager: FleetManager) -> Iterator[str]:
    app = FastAPI()
    add_routes(app, manager, None)
    yield from serve(app)


def test_secrets_never_leave(api: str, manager: FleetManager) -> None:
    body = {"name": "lab", "url": "http://127.0.0.1:9", "user": "sd", "password": SECRET}
    added = requests.post(f"{api}/distributed/v1/workers", json=body, timeout=TIMEOUT)
    assert added.status_code == 201, added.text
    assert added.json()["auth"] == {"user": "sd", "has_password": True, "password_env": None}
    outputs = [added.text]
    for path in ("workers", "status", "version", "openapi.json"):
        url = f"{api}/{path}" if path == "openapi.json" else f"{api}/distributed/v1/{path}"
        response = requests.get(url, timeout=TIMEOUT)
        assert response.status_code == 200
        outputs.append(response.text)
    renamed = requests.put(
        f"{api}/distributed/v1/workers/lab",
        json={"name": "lab", "url": "http://127.0.0.1:10", "user": "sd"},
        timeout=TIMEOUT,
    )
    assert renamed.status_code == 200, renamed.text
    outputs.append(renamed.text)
    assert all(SECRET not in text for text in outputs)
    # the password stays in the file (kept by an update that left it empty), and only the owner can read it
    saved = json.loads(manager.path.read_text())
    assert saved["workers"][0]["auth"]["password"] == SECRET
    assert saved["workers"][0]["url"] == "http://127.0.0.1:10"
    assert stat.S_IMODE(os.stat(manager.path).st_mode) == 0o600


def test_bad_input_names_the_field_and_loses_nothing(api: str, manager: FleetManager) -> None:
    first = requests.post(
        f"{api}/distributed/v1/workers", json={"name": "a", "url": "http://127.0.0.1:9"}, timeout=TIMEOUT
    )
    assert first.status_code == 201
    before = manager.path.read_text()
    bad_url = requests.post(f"{api}/distributed/v1/workers", json={"name": "b", "url": "ftp://x"}, timeout=TIMEOUT)
    assert bad_url.status_code == 422 and "url" in bad_url.json()["detail"]
    same = requests.post(
        f"{api}/distributed/v1/workers", json={"name": "a", "url": "http://127.0.0.1:8"}, timeout=TIMEOUT
    )
    assert same.status_code == 422 and "exists" in same.json()["detail"]
    reserved = requests.post(
        f"{api}/distributed/v1/workers", json={"name": "master", "url": "http://h:1"}, timeout=TIMEOUT
    )
    assert reserved.status_code == 422 and "name" in reserved.json()["detail"]
    unknown = requests.delete(f"{api}/distributed/v1/workers/nobody", timeout=TIMEOUT)
    assert unknown.status_code == 404
    assert manager.path.read_text() == before


def test_api_auth_guards_every_route(manager: FleetManager) -> None:
    app = FastAPI()
    add_routes(app, manager, "alice:s3cret:with-colon,bob:pw")
    for base in serve(app):
        assert requests.get(f"{base}/distributed/v1/workers", timeout=TIMEOUT).status_code == 401
        wrong = requests.get(f"{base}/distributed/v1/status", auth=("alice", "nope"), timeout=TIMEOUT)
        assert wrong.status_code == 401
        good = requests.get(f"{base}/distributed/v1/status", auth=("alice", "s3cret:with-colon"), timeout=TIMEOUT)
        assert good.status_code == 200
        added = requests.post(
            f"{base}/distributed/v1/workers",
            json={"name": "x", "url": "http://h:1"},
            auth=("bob", "pw"),
            timeout=TIMEOUT,
        )
        assert added.status_code == 201


def test_concurrent_saves_from_the_tab_and_the_api_never_corrupt(api: str, manager: FleetManager) -> None:
    def through_api(i: int) -> int:
        body = {"name": f"api{i}", "url": f"http://127.0.0.1:{2000 + i}", "user": "u", "password": SECRET}
        return requests.post(f"{api}/distributed/v1/workers", json=body, timeout=TIMEOUT).status_code

    def through_tab(i: int) -> int:  # the tab calls the same manager from gradio's worker threads
        manager.add(WorkerInput(name=f"tab{i}", url=f"http://127.0.0.1:{3000 + i}"))
        manager.set_enabled(f"tab{i}", False)
        return 201

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(through_api, i) for i in range(12)] + [pool.submit(through_tab, i) for i in range(12)]
        assert [f.result() for f in futures] == [201] * 24
    saved = json.loads(manager.path.read_text())
    names = sorted(w["name"] for w in saved["workers"])
    assert names == sorted([f"api{i}" for i in range(12)] + [f"tab{i}" for i in range(12)])
    assert all(not w["enabled"] for w in saved["workers"] if w["name"].startswith("tab"))
    assert sorted(w.name for w in manager.workers()) == names


def test_benchmark_and_status_against_a_real_worker(api: str, fleet_workers: dict[str, LocalWorker]) -> None:
    url = fleet_workers["fast"].url
    requests.post(f"{api}/distributed/v1/workers", json={"name": "w", "url": url}, timeout=TIMEOUT)
    bench = requests.post(
        f"{api}/distributed/v1/benchmark",
        json={"workers": ["w"], "width": 64, "height": 64, "steps": 4, "budget_s": 4},
        timeout=TIMEOUT,
    )
    assert bench.status_code == 200, bench.text
    result = bench.json()[0]
    assert result["worker"] == "w" and result["error"] is None and result["ipm"] > 0
    status = requests.get(f"{api}/distributed/v1/status", timeout=TIMEOUT).json()
    assert status["workers"][0]["state"] == "online"
    assert status["workers"][0]["calibrated"] is True


def test_benchmarking_the_master_without_its_api_says_why(manager: FleetManager) -> None:
    from distributed.webui.runtime import OwnApi, own_api

    app = FastAPI()
    add_routes(app, manager, None, own_api(argparse.Namespace(api=False, nowebui=False)))
    for api in serve(app):
        body = {"workers": ["master"], "width": 64, "height": 64, "steps": 4}
        answer = requests.post(f"{api}/distributed/v1/benchmark", json=body, timeout=TIMEOUT)
        assert answer.status_code == 409 and "--api" in answer.json()["detail"], answer.text
    assert OwnApi(None).url is None


def test_unknown_keys_are_refused_naming_the_key(api: str, manager: FleetManager) -> None:
    body = {"name": "lab", "url": "http://127.0.0.1:9", "max_bach": 4, "pasword": "p"}
    answer = requests.post(f"{api}/distributed/v1/workers", json=body, timeout=TIMEOUT)
    assert answer.status_code == 422, answer.text
    named = {str(error["loc"][-1]) for error in answer.json()["detail"]}
    assert {"max_bach", "pasword"} <= named, answer.text
    assert manager.workers() == []  # nothing was written
    bench = requests.post(f"{api}/distributed/v1/benchmark", json={"workers": [], "widht": 64}, timeout=TIMEOUT)
    assert bench.status_code == 422 and "widht" in bench.text
    bench = requests.post(f"{api}/distributed/v1/benchmark", json={"budget_s": 1}, timeout=TIMEOUT)
    assert bench.status_code == 422 and "budget_s" in bench.text
