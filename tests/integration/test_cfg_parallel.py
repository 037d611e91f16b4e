"""The CFG split across two worker processes (peer mode) and two local lanes: the same bytes either way, the image
still returned when the peer is killed mid-image, and a peer without the secret never used."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.images import decode_image_bytes
from distributed.parallel.frames import SECRET_ENV

BODY = {"prompt": "a lighthouse", "negative_prompt": "blurry", "seed": 11, "sampler_name": "Euler a", "cfg_scale": 7}


@pytest.fixture(scope="module")
def secret() -> Iterator[str]:
    before = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = "integration secret"  # inherited by the workers this module starts
    yield os.environ[SECRET_ENV]
    if before is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = before


@pytest.fixture(scope="module")
def two_lanes(secret: str) -> Iterator[LocalWorker]:
    worker = LocalWorker("two", extra_args=["--devices", "cpu,cpu", "--cfg-parallel", "on"]).start(120)
    yield worker
    worker.stop()


def render(url: str, size: int, steps: int) -> tuple[np.ndarray, dict[str, Any]]:
    answer = requests.post(
        f"{url}/sdapi/v1/txt2img", json={**BODY, "width": size, "height": size, "steps": steps}, timeout=300
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    pixels = np.asarray(decode_image_bytes(base64.b64decode(data["images"][0])).convert("RGB")).astype(int)
    return pixels, json.loads(data["info"])


def pair(secret_for_client: str | None = None) -> tuple[LocalWorker, LocalWorker]:
    port = free_port()
    listener = LocalWorker("listener", extra_args=["--cfg-listen", str(port)]).start(120)
    if secret_for_client is not None:
        os.environ[SECRET_ENV], kept = secret_for_client, os.environ[SECRET_ENV]
    try:
        client = LocalWorker("pair", extra_args=["--cfg-peer", f"127.0.0.1:{port}", "--cfg-parallel", "on"]).start(120)
    finally:
        if secret_for_client is not None:
            os.environ[SECRET_ENV] = kept
    return listener, client


def test_a_peer_pair_renders_the_same_bytes_as_two_local_lanes(two_lanes: LocalWorker) -> None:
    listener, client = pair()
    try:
        ours, info = render(client.url, 64, 6)
        local, local_info = render(two_lanes.url, 64, 6)
        lanes = requests.get(f"{client.url}/distributed/v1/lanes", timeout=10).json()
    finally:
        client.stop()
        listener.stop()
    assert (ours == local).all()
    assert info["cfg_split"]["split_steps"] == 6 and info["cfg_split"]["fell_back"] is None
    assert 'CFG split: "cpu + peer 127.0.0.1:' in info["infotexts"][0]  # quoted: the value holds a colon
    assert local_info["infotexts"][0].count("CFG split: cpu + cpu") == 1
    assert lanes["peer"].startswith("127.0.0.1:") and lanes["cfg_parallel"] == "on"


def test_the_peer_killed_mid_image_still_returns_the_same_image(two_lanes: LocalWorker) -> None:
    listener, client = pair()
    outcome: dict[str, Any] = {}
    try:
        render(client.url, 64, 1)  # connected and warm
        thread = threading.Thread(target=lambda: outcome.setdefault("r", render(client.url, 128, 40)))
        thread.start()
        deadline = threading.Event()
        for _ in range(600):  # until the pair is a few steps in (or 60 s)
            state = requests.get(f"{client.url}/sdapi/v1/progress", timeout=5).json()["state"]
            if state["sampling_step"] >= 3:
                break
            deadline.wait(0.1)
        listener.kill()
        thread.join(120)
    finally:
        client.stop()
        listener.stop()
    ours, info = outcome["r"]
    local, _ = render(two_lanes.url, 128, 40)
    assert info["cfg_split"]["fell_back"] and 0 < info["cfg_split"]["split_steps"] < 40
    assert "fell back" in info["infotexts"][0]
    assert (ours == local).all()  # finished here with both halves: the same bytes


def test_a_peer_without_the_secret_is_never_used(two_lanes: LocalWorker) -> None:
    listener, client = pair(secret_for_client="a guess")
    try:
        _, info = render(client.url, 64, 2)
        log = "\n".join(client.log_lines)
    finally:
        client.stop()
        listener.stop()
    assert "cfg_split" not in info and "CFG split" not in info["infotexts"][0]
    assert "does not know the shared secret" in log or "shared secret" in log
