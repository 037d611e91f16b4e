"""The worker's API beyond generation: models, options, progress, interrupt/skip, queue order, errors, auth."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from distributed.cli.localfleet import LocalWorker
from tests.helpers import TIMEOUT, info, ok, pixels, txt2img
from tests.integration.conftest import AUTH
from tests.threadworker import ThreadWorker


def _in_background(call: Callable[[], requests.Response]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["response"] = call()
        result["finished"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _wait_for_step(url: str, minimum_step: int = 1, deadline_s: float = 30.0) -> dict[str, Any]:
    """Ask /progress until the job has done a step; a bounded wait, as a client would do it."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        progress = requests.get(f"{url}/sdapi/v1/progress", timeout=TIMEOUT).json()
        if progress["state"]["job_count"] and progress["state"]["sampling_step"] >= minimum_step:
            return dict(progress)
        threading.Event().wait(0.05)
    raise AssertionError("the job never reported a finished step")


def test_progress_while_busy_and_idle(slow: ThreadWorker) -> None:
    idle = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=TIMEOUT).json()
    assert idle["progress"] == 0
    assert idle["state"]["job_count"] == 0
    thread, result = _in_background(lambda: txt2img(slow.url, n_iter=2, steps=8, seed=1))
    progress = _wait_for_step(slow.url)
    assert progress["state"]["job_count"] == 2
    assert progress["state"]["sampling_steps"] == 8
    assert 0 < progress["progress"] < 1
    assert progress["eta_relative"] > 0
    thread.join(timeout=60)
    assert len(ok(result["response"])["images"]) == 2


def test_interrupt_returns_early_with_images(slow: ThreadWorker) -> None:
    # four images of two seconds each; interrupt during the first
    thread, result = _in_background(lambda: txt2img(slow.url, n_iter=4, steps=8, seed=20))
    _wait_for_step(slow.url)
    asked = time.monotonic()
    assert requests.post(f"{slow.url}/sdapi/v1/interrupt", timeout=TIMEOUT).status_code == 200
    thread.join(timeout=30)
    body = ok(result["response"])
    assert result["finished"] - asked < 1.0
    assert 1 <= len(body["images"]) < 4
    assert info(body)["all_seeds"] == [20, 21, 22, 23]
    # the next job is not affected by the interrupt
    assert len(ok(txt2img(slow.url, seed=1))["images"]) == 1


def test_skip_ends_only_the_current_batch(slow: ThreadWorker) -> None:
    thread, result = _in_background(lambda: txt2img(slow.url, n_iter=2, steps=8, seed=30))
    _wait_for_step(slow.url)
    started = time.monotonic()
    requests.post(f"{slow.url}/sdapi/v1/skip", timeout=TIMEOUT)
    thread.join(timeout=30)
    body = ok(result["response"])
    assert len(body["images"]) == 2
    assert result["finished"] - started < 3.0  # the second image (2 s) still ran, the first did not finish


def test_concurrent_requests_are_served_in_order(slow: ThreadWorker) -> None:
    calls = []
    for seed in (1, 2, 3):
        calls.append(_in_background(lambda seed=seed: txt2img(slow.url, seed=seed)))
        # the first is running before the next arrives; each later one queues behind
        _wait_for_step(slow.url) if seed == 1 else threading.Event().wait(0.3)
    for thread, _ in calls:
        thread.join(timeout=60)
    finishes = [result["finished"] for _, result in calls]
    assert finishes == sorted(finishes)
    assert [info(ok(result["response"]))["seed"] for _, result in calls] == [1, 2, 3]
    assert finishes[2] - finishes[0] >= 1.8  # one at a time: each took its full second


def _detail(response: requests.Response) -> str:
    return str(response.json()["detail"])


def test_unknown_model_is_404_naming_it(worker: LocalWorker) -> None:
    response = txt2img(worker.url, override_settings={"sd_model_checkpoint": "nonexistent-v9"})
    assert response.status_code == 404
    assert "nonexistent-v9" in _detail(response)
    response = requests.post(
        f"{worker.url}/sdapi/v1/options", json={"sd_model_checkpoint": "nonexistent-v9"}, timeout=TIMEOUT
    )
    assert response.status_code == 404
    assert "nonexistent-v9" in _detail(response)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sampler_name": "Warp Drive"}, "sampler_name"),
        ({"scheduler": "Sideways"}, "scheduler"),
        ({"steps": 0}, "steps"),
        ({"width": 65}, "width"),
        ({"batch_size": "many"}, "batch_size"),
        ({"subseed_strength": 3}, "subseed_strength"),
        ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+", "denoising_strength": 0.5}, "hr_upscaler"),
        ({"enable_hr": True, "hr_checkpoint_name": "other"}, "hr_checkpoint_name"),
        ({"override_settings": {"randn_source": "TPU"}}, "override_settings.randn_source"),
        ({"override_settings": {"pad_cond_uncond": True}}, "override_settings.pad_cond_uncond"),
        ({"restore_faces": True}, "restore_faces"),
        ({"prompt": "a (cat:1.2.3)"}, "prompt"),
        ({"negative_prompt": "[a|" * 2000 + "]" * 2000}, "negative_prompt"),
        ({"alwayson_scripts": {"controlnet": {"args": []}}}, "alwayson_scripts.controlnet"),
        ({"prompt": "a cat <lora:catstyle:0.8>"}, "prompt"),
        ({"width": 4096, "height": 4096}, "width"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(worker: LocalWorker, payload: dict[str, Any], field: str) -> None:
    response = txt2img(worker.url, **payload)
    assert response.status_code == 422, response.text
    assert field in _detail(response)


def test_bad_img2img_inputs_are_422(worker: LocalWorker) -> None:
    url = f"{worker.url}/sdapi/v1/img2img"
    response = requests.post(url, json={"prompt": "x", "width": 64, "height": 64}, timeout=TIMEOUT)
    assert response.status_code == 422
    assert "init_images" in _detail(response)
    response = requests.post(
        url, json={"init_images": ["bm90IGFuIGltYWdl"], "width": 64, "height": 64}, timeout=TIMEOUT
    )
    assert response.status_code == 422
    assert "init_images[0]" in _detail(response)


def test_malformed_and_oversized_bodies_are_4xx(worker: LocalWorker) -> None:
    url = f"{worker.url}/sdapi/v1/txt2img"
    malformed = requests.post(url, data=b"{not json", headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert 400 <= malformed.status_code < 500
    huge = b'{"prompt": "' + b"a" * (65 * 1024 * 1024) + b'"}'
    oversized = requests.post(url, data=huge, headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert oversized.status_code == 413


def test_pipeline_failure_is_500_and_the_worker_keeps_serving(worker: LocalWorker) -> None:
    # a CFG scale this large overflows float32 inside the sampler: the NaN check must catch it
    response = txt2img(worker.url, cfg_scale=1e38, seed=1)
    assert response.status_code == 500
    assert "NaN" in _detail(response)
    assert len(ok(txt2img(worker.url, seed=1))["images"]) == 1
    idle = requests.get(f"{worker.url}/sdapi/v1/progress", timeout=TIMEOUT).json()
    assert idle["state"]["job_count"] == 0


def test_auth_accepted_and_refused(twin: LocalWorker) -> None:
    assert txt2img(twin.url).status_code == 401
    assert txt2img(twin.url, auth=(AUTH[0], "wrong")).status_code == 401
    assert txt2img(twin.url, auth=("mallory", AUTH[1])).status_code == 401
    refused = requests.get(f"{twin.url}/sdapi/v1/options", timeout=TIMEOUT)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Basic"
    assert len(ok(txt2img(twin.url, auth=AUTH))["images"]) == 1
    assert requests.get(f"{twin.url}/sdapi/v1/progress", auth=AUTH, timeout=TIMEOUT).status_code == 200
    assert AUTH[1] not in "\n".join(twin.log_lines)


def test_clip_skip_renders_and_changes_the_picture(worker: LocalWorker) -> None:
    """The master forwards its clip skip to every worker: it must render (transformers 4.x and 5.x lay the text
    model out differently), say so in the infotext, and change the picture; set through /options it keeps working."""
    from tests.helpers import pixels

    plain = ok(txt2img(worker.url, seed=9))
    skipped = ok(txt2img(worker.url, seed=9, override_settings={"CLIP_stop_at_last_layers": 2}))
    assert "Clip skip: 2" in info(skipped)["infotexts"][0]
    assert (pixels(plain["images"][0]) != pixels(skipped["images"][0])).any()
    before = requests.get(f"{worker.url}/sdapi/v1/options", timeout=TIMEOUT).json()
    try:
        assert requests.post(f"{worker.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, timeout=TIMEOUT).ok
        assert "Clip skip: 2" in info(ok(txt2img(worker.url, seed=9)))["infotexts"][0]
    finally:
        requests.post(
            f"{worker.url}/sdapi/v1/options",
            json={"CLIP_stop_at_last_layers": before.get("CLIP_stop_at_last_layers", 1)},
            timeout=TIMEOUT,
        )


def test_what_a1111_accepts_the_worker_accepts(worker: LocalWorker) -> None:
    """PLMS; empty refiner and script names (no refiner, no script); A1111's option keys read, written, read back
    (A1111's own test_options_write)."""
    plms = ok(txt2img(worker.url, seed=3, sampler_name="PLMS"))
    assert "Sampler: PLMS" in info(plms)["infotexts"][0]
    ok(txt2img(worker.url, seed=3, refiner_checkpoint="", script_name=""))
    ok(txt2img(worker.url, seed=3, refiner_checkpoint="None"))
    assert txt2img(worker.url, seed=3, refiner_checkpoint="sdxl_refiner").status_code == 422
    url = f"{worker.url}/sdapi/v1/options"
    before = requests.get(url, timeout=TIMEOUT).json()["send_seed"]
    assert requests.post(url, json={"send_seed": not before}, timeout=TIMEOUT).ok
    assert requests.get(url, timeout=TIMEOUT).json()["send_seed"] is (not before)
    requests.post(url, json={"send_seed": before}, timeout=TIMEOUT)


def test_a1111_listing_routes_and_extras(worker: LocalWorker) -> None:
    """The utility routes A1111's own test suite calls, and the Extras upscale with the built-in upscalers."""
    from PIL import Image

    from tests.helpers import png_b64

    def get(route: str) -> Any:
        response = requests.get(f"{worker.url}/sdapi/v1/{route}", timeout=TIMEOUT)
        assert response.status_code == 200, route
        return response.json()

    assert [u["name"] for u in get("upscalers")] == ["None", "Lanczos", "Nearest"]
    assert "Latent (nearest-exact)" in [m["name"] for m in get("latent-upscale-modes")]
    for empty in ("face-restorers", "realesrgan-models", "prompt-styles", "hypernetworks"):
        assert get(empty) == []
    assert get("embeddings") == {"loaded": {}, "skipped": {}}
    picture = Image.new("RGB", (24, 16), (200, 30, 30))
    url = f"{worker.url}/sdapi/v1/extra-single-image"
    body = requests.post(url, json={"image": png_b64(picture), "upscaler_1": "Nearest"}, timeout=TIMEOUT).json()
    assert pixels(body["image"]).shape == (32, 48, 3)  # 2x by default
    body = requests.post(
        url, json={"image": png_b64(picture), "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 40,
                   "upscaler_1": "Lanczos"}, timeout=TIMEOUT,
    ).json()  # fmt: skip
    assert pixels(body["image"]).shape == (40, 40, 3)
    refused = requests.post(url, json={"image": png_b64(picture), "upscaler_1": "R-ESRGAN 4x+"}, timeout=TIMEOUT)
    assert refused.status_code == 422 and "upscaler_1" in _detail(refused)
    rendered = ok(txt2img(worker.url, seed=5, prompt="a red barn"))["images"][0]
    parsed = requests.post(f"{worker.url}/sdapi/v1/png-info", json={"image": rendered}, timeout=TIMEOUT).json()
    assert parsed["parameters"]["Prompt"] == "a red barn" and parsed["parameters"]["Seed"] == "5"


def test_hires_fix_renders_at_the_larger_size(worker: LocalWorker) -> None:
    plain = ok(txt2img(worker.url, seed=4))
    hires = ok(txt2img(worker.url, seed=4, enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_second_pass_steps=2))
    assert pixels(hires["images"][0]).shape == (128, 128, 3)
    text = info(hires)["infotexts"][0]
    assert "Hires upscale: 2" in text and "Hires steps: 2" in text and "Denoising strength: 0.5" in text
    resized = ok(txt2img(worker.url, seed=4, enable_hr=True, hr_resize_x=96, hr_resize_y=72, denoising_strength=0.5,
                         hr_upscaler="Lanczos"))  # fmt: skip
    assert pixels(resized["images"][0]).shape == (72, 96, 3)  # cut from 96x96 to the requested 96x72
    assert pixels(plain["images"][0]).shape == (64, 64, 3)
