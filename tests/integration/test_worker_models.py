"""Checkpoints and VAEs on a real worker: listing, options, per-request overrides, offline single files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from distributed.cli.localfleet import LocalWorker
from distributed.infotext import parse_infotext
from tests.helpers import TIMEOUT, info, max_diff, ok, txt2img
from tests.integration.conftest import SHARED_MODEL

needs_shared = pytest.mark.skipif(not SHARED_MODEL.is_dir(), reason="needs ../shared/webui-tiny-model")


def test_models_listing_and_options(worker: LocalWorker) -> None:
    models = requests.get(f"{worker.url}/sdapi/v1/sd-models", timeout=TIMEOUT).json()
    names = {m["model_name"] for m in models}
    assert {"tiny", "other"} <= names
    tiny = next(m for m in models if m["model_name"] == "tiny")
    assert tiny["hash"] and tiny["title"] == f"tiny [{tiny['hash']}]"
    options = requests.get(f"{worker.url}/sdapi/v1/options", timeout=TIMEOUT).json()
    assert options["sd_model_checkpoint"] == tiny["title"]
    samplers = {s["name"] for s in requests.get(f"{worker.url}/sdapi/v1/samplers", timeout=TIMEOUT).json()}
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM"} <= samplers
    assert requests.get(f"{worker.url}/sdapi/v1/script-info", timeout=TIMEOUT).json() == []
    memory = requests.get(f"{worker.url}/sdapi/v1/memory", timeout=TIMEOUT).json()
    assert memory["ram"]["total"] > 0
    assert requests.get(f"{worker.url}/internal/ping", timeout=TIMEOUT).status_code == 200


def test_switching_models_by_option_and_per_request(worker: LocalWorker) -> None:
    base = ok(txt2img(worker.url, seed=9))
    per_request = ok(txt2img(worker.url, seed=9, override_settings={"sd_model_checkpoint": "other"}))
    assert max_diff(base["images"][0], per_request["images"][0]) > 3
    assert info(per_request)["sd_model_name"] == "other"
    # restored afterwards, as A1111 does by default
    options = requests.get(f"{worker.url}/sdapi/v1/options", timeout=TIMEOUT).json()
    assert options["sd_model_checkpoint"].startswith("tiny")
    assert ok(txt2img(worker.url, seed=9))["images"] == base["images"]
    try:
        switched = requests.post(
            f"{worker.url}/sdapi/v1/options", json={"sd_model_checkpoint": "other"}, timeout=TIMEOUT
        )
        assert switched.status_code == 200, switched.text
        assert ok(txt2img(worker.url, seed=9))["images"] == per_request["images"]
    finally:
        requests.post(f"{worker.url}/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"}, timeout=TIMEOUT)


@needs_shared
def test_a1111_single_file_checkpoint_loads_offline(worker: LocalWorker, models_dir: Path) -> None:
    body = ok(txt2img(worker.url, seed=1, batch_size=2, override_settings={"sd_model_checkpoint": "tiny-sd"}))
    details = info(body)
    assert details["sd_model_name"] == "tiny-sd"
    assert details["sd_model_hash"] == "97f9c2dd23"  # A1111's short sha256 of the file
    single = ok(txt2img(worker.url, seed=2, override_settings={"sd_model_checkpoint": "tiny-sd.safetensors"}))
    assert max_diff(body["images"][1], single["images"][0]) <= 1


def test_vae_per_request_in_diffusers_layout(worker: LocalWorker) -> None:
    vaes = requests.get(f"{worker.url}/sdapi/v1/sd-vae", timeout=TIMEOUT).json()
    assert "nudged.safetensors" in {v["model_name"] for v in vaes}
    base = ok(txt2img(worker.url, seed=12))
    nudged = ok(txt2img(worker.url, seed=12, override_settings={"sd_vae": "nudged.safetensors"}))
    assert max_diff(base["images"][0], nudged["images"][0]) > 3
    assert parse_infotext(info(nudged)["infotexts"][0])[2]["VAE"] == "nudged"
    assert "VAE" not in parse_infotext(info(base)["infotexts"][0])[2]
    missing = txt2img(worker.url, override_settings={"sd_vae": "nowhere.pt"})
    assert missing.status_code == 404
    assert "nowhere.pt" in missing.json()["detail"]


@needs_shared
def test_vae_in_a1111_layout_equals_the_checkpoints_own(worker: LocalWorker) -> None:
    own = ok(txt2img(worker.url, seed=13, override_settings={"sd_model_checkpoint": "tiny-sd"}))
    separate = ok(
        txt2img(worker.url, seed=13, override_settings={"sd_model_checkpoint": "tiny-sd", "sd_vae": "tiny-sd-vae"})
    )
    assert max_diff(own["images"][0], separate["images"][0]) <= 1


@pytest.fixture(scope="module")
def by_path(models_dir: Path) -> Iterator[LocalWorker]:
    checkpoint = models_dir / "Stable-diffusion" / "tiny-sd.safetensors"
    with LocalWorker("by-path", threads=2, model=str(checkpoint)) as started:
        yield started


@needs_shared
def test_model_flag_takes_a_checkpoint_path(by_path: LocalWorker, worker: LocalWorker) -> None:
    options = requests.get(f"{by_path.url}/sdapi/v1/options", timeout=TIMEOUT).json()
    assert options["sd_model_checkpoint"] == "tiny-sd.safetensors [97f9c2dd23]"
    mine = ok(txt2img(by_path.url, seed=21))
    theirs = ok(txt2img(worker.url, seed=21, override_settings={"sd_model_checkpoint": "tiny-sd"}))
    assert max_diff(mine["images"][0], theirs["images"][0]) <= 1
