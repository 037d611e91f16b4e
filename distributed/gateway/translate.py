"""A1111 requests in, jobs out; job results back as A1111 answers (images, parameters, info with every seed)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from distributed.engine.costmodel import Workload
from distributed.engine.jobs import JobResult, JobSpec, fixed_seed
from distributed.infotext import quote

KINDS = ("txt2img", "img2img")
MAX_IMAGES = 1000  # one request's batch_size x n_iter
# what the gateway sets per chunk (the seeds, the batch) or cannot honour across workers
OWN_FIELDS = ("batch_size", "n_iter", "seed", "subseed", "send_images", "save_images")
REFUSED_FIELDS = {
    "script_name": "a selectable script (X/Y/Z plot, loopback) runs one whole job on one webui; it is not distributed",
}


class RequestError(ValueError):
    """A request the gateway refuses: HTTP 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _integer(request: Mapping[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = request.get(field, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise RequestError(field, f"must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise RequestError(field, f"must be between {low} and {high}, got {value}")
    return int(value)


def checkpoint_of(request: Mapping[str, Any], default: str | None) -> str | None:
    """The checkpoint a request asks for: its override_settings, else the gateway's default (POST /options)."""
    overrides = request.get("override_settings")
    if isinstance(overrides, dict) and overrides.get("sd_model_checkpoint"):
        return str(overrides["sd_model_checkpoint"])
    return default


def build_spec(kind: str, request: Mapping[str, Any]) -> JobSpec:
    """The job for one A1111 request: batch_size x n_iter images, seeds fixed now (A1111's rule: image k has seed
    base + k), everything else sent to the workers as the client wrote it."""
    for field, why in REFUSED_FIELDS.items():
        if request.get(field):
            raise RequestError(field, why)
    batch = _integer(request, "batch_size", 1, 1, MAX_IMAGES)
    n_iter = _integer(request, "n_iter", 1, 1, MAX_IMAGES)
    if batch * n_iter > MAX_IMAGES:
        raise RequestError("batch_size", f"batch_size x n_iter is {batch * n_iter}, more than {MAX_IMAGES}")
    width = _integer(request, "width", 512, 8, 16384)
    height = _integer(request, "height", 512, 8, 16384)
    steps = _integer(request, "steps", 20, 1, 1000)
    if not isinstance(request.get("prompt", ""), str):
        raise RequestError("prompt", "must be text")
    if kind == "img2img" and not request.get("init_images"):
        raise RequestError("init_images", "img2img needs at least one init image")
    strength = request.get("subseed_strength") or 0.0
    if not isinstance(strength, (int, float)):
        raise RequestError("subseed_strength", f"must be a number, got {strength!r}")
    payload = {key: value for key, value in request.items() if key not in OWN_FIELDS}
    return JobSpec(
        kind=kind,
        payload=payload,
        images=batch * n_iter,
        seed=fixed_seed(_integer(request, "seed", -1, -1, 2**32 - 1)),
        subseed=fixed_seed(_integer(request, "subseed", -1, -1, 2**32 - 1)),
        subseed_strength=float(strength),
        workload=Workload(width, height, steps),
    )


def with_worker(infotext: str, worker: str) -> str:
    """The infotext naming the worker that made the image (A1111 infotexts end in `key: value` pairs)."""
    if not infotext or "Worker: " in infotext:
        return infotext
    return f"{infotext}, Worker: {quote(worker)}"


def answer(spec: JobSpec, request: Mapping[str, Any], result: JobResult) -> dict[str, Any]:
    """A1111's answer: every image (base64 PNG, as the worker made it), the request as `parameters`, and `info` with
    each image's seed, subseed and infotext; `info.distributed` says who made what and what failed."""
    import base64

    images = result.requested
    texts = [with_worker(image.infotext, image.worker) for image in images]
    prompt = str(request.get("prompt", ""))
    negative = str(request.get("negative_prompt", ""))
    info: dict[str, Any] = {
        "prompt": prompt,
        "all_prompts": [prompt] * len(images),
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * len(images),
        "seed": images[0].seed if images else spec.seed,
        "all_seeds": [image.seed for image in images],
        "subseed": images[0].subseed if images else spec.subseed,
        "all_subseeds": [image.subseed for image in images],
        "subseed_strength": spec.subseed_strength,
        "width": spec.workload.width,
        "height": spec.workload.height,
        "sampler_name": request.get("sampler_name") or request.get("sampler_index"),
        "cfg_scale": request.get("cfg_scale", 7.0),
        "steps": spec.workload.steps,
        "batch_size": request.get("batch_size", 1),
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": request.get("styles", []),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "distributed": {
            "wall_s": round(result.wall_s, 3),
            "interrupted": result.interrupted,
            "workers": {
                name: {"images": stats.images, "failed_chunks": stats.failed_chunks}
                for name, stats in result.workers.items()
            },
            "image_workers": [image.worker for image in images],
            "failures": result.failures,
        },
    }
    parameters = {**request, "seed": spec.seed, "subseed": spec.subseed}
    return {
        "images": [base64.b64encode(image.png).decode("ascii") for image in images],
        "parameters": parameters,
        "info": json.dumps(info),
    }
