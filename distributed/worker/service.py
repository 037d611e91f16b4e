"""The headless worker's service: models, options and generation, independent of HTTP.

The FastAPI app (app.py) is a thin layer over this; tests of behaviour that needs no HTTP can use it directly.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from distributed import __version__
from distributed.images import png_to_base64
from distributed.infotext import ParamValue, build_infotext
from distributed.worker.checkpoints import CheckpointInfo, CheckpointRegistry
from distributed.worker.components import Components
from distributed.worker.jobs import FifoLock, JobState
from distributed.worker.lanes import CfgLanes, LaneUse
from distributed.worker.loader import ModelCache, load_vae
from distributed.worker.pipeline import BatchSpec, render_batch
from distributed.worker.requests_check import (
    ImageInputs,
    RequestFieldError,
    check_supported,
    image_inputs,
    strip_extra_networks,
)
from distributed.worker.samplers import SamplerChoice, UnknownSamplerError, resolve
from distributed.worker.schemas import Img2ImgRequest, Txt2ImgRequest

logger = logging.getLogger(__name__)

VERSION_TEXT = f"distributed-worker {__version__}"
VAE_AUTOMATIC = ("Automatic", "None", None, "")


# keys A1111 clients and its API tests read from GET /options, at A1111 1.10.1's defaults (POST keeps any key given)
A1111_DEFAULTS: dict[str, Any] = {
    "samples_save": True,
    "samples_format": "png",
    "save_images_add_number": True,
    "grid_save": True,
    "send_seed": True,
    "send_size": True,
    "sd_checkpoint_cache": 0,
    "eta_noise_seed_delta": 0,
    "face_restoration": False,
    "img2img_color_correction": False,
    "enable_emphasis": True,
    "comma_padding_backtrack": 20,
    "outdir_samples": "",
    "show_progress_every_n_steps": 10,
}


@dataclass
class WorkerOptions:
    """The subset of A1111's shared.opts a headless worker honours."""

    sd_model_checkpoint: str
    sd_vae: str = "Automatic"
    CLIP_stop_at_last_layers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **A1111_DEFAULTS,
            **self.extra,
            "sd_model_checkpoint": self.sd_model_checkpoint,
            "sd_vae": self.sd_vae,
            "CLIP_stop_at_last_layers": self.CLIP_stop_at_last_layers,
            "samples_format": "png",
        }


@dataclass
class LoadedModel:
    checkpoint: CheckpointInfo
    components: Components
    vae_name: str | None


@dataclass
class Render:
    """One request, checked and resolved: what every step of rendering and reporting it needs."""

    request: Txt2ImgRequest
    kind: str
    choice: SamplerChoice
    prompt: str  # extra-network tags removed
    negative: str
    inputs: ImageInputs | None
    loaded: LoadedModel
    clip_skip: int


def fixed_seed(seed: int) -> int:
    return random.randrange(4294967294) if seed == -1 else seed


class WorkerService:
    def __init__(
        self,
        registry: CheckpointRegistry,
        initial_model: str,
        emulate_ipm: float | None = None,
        max_pixels: int = 2048 * 2048,
        device: str = "cpu",
        model_cache: int = 2,
        lanes: CfgLanes | None = None,
    ) -> None:
        self.registry = registry
        self.cache = ModelCache(model_cache)
        self.state = JobState(emulate_ipm)
        self.queue = FifoLock()
        self.max_pixels = max_pixels
        self.device = device
        self.lanes = lanes
        self._options_lock = threading.Lock()
        first = registry.find(initial_model)
        self.options = WorkerOptions(sd_model_checkpoint=first.name)

    # -- models --------------------------------------------------------------------------------------------------
    def load_initial(self) -> None:
        """Load the starting checkpoint (at start-up, so the first request does not pay for it)."""
        with self.queue.hold():
            self._load(self.options.sd_model_checkpoint, self.options.sd_vae)
            self.options.sd_model_checkpoint = self.registry.find(self.options.sd_model_checkpoint).title

    def current_components(self) -> Components:
        """The loaded checkpoint's parts (what a CFG peer lane renders with)."""
        with self.queue.hold():
            return self._load(self.options.sd_model_checkpoint, self.options.sd_vae).components

    def _load(self, checkpoint_name: str, vae_name: str | None) -> LoadedModel:
        info = self.registry.find(checkpoint_name)
        components = self.cache.get(info).to(self.device, _dtype_for(self.device))
        vae = None
        if vae_name not in VAE_AUTOMATIC:
            assert vae_name is not None
            path = self.registry.find_vae(vae_name)
            components = load_vae(components, path).to(self.device, _dtype_for(self.device))
            vae = path.name
        return LoadedModel(info, components, vae)

    def sd_models(self) -> list[dict[str, Any]]:
        self.registry.rescan()
        return [
            {
                "title": c.title,
                "model_name": c.model_name,
                "hash": c.shorthash,
                "sha256": c.sha256,
                "filename": str(c.path) if c.path else c.name,
                "config": str(c.path.with_suffix(".yaml"))
                if c.path and c.path.with_suffix(".yaml").is_file()
                else None,
            }
            for c in self.registry.checkpoints
        ]

    def sd_vaes(self) -> list[dict[str, str]]:
        self.registry.rescan()
        return [{"model_name": name, "filename": str(path)} for name, path in self.registry.vaes.items()]

    def set_options(self, update: dict[str, Any]) -> None:
        """POST /sdapi/v1/options: unknown checkpoint or VAE -> ModelNotFoundError; switching waits its turn."""
        checkpoint = update.get("sd_model_checkpoint")
        vae = update.get("sd_vae")
        if checkpoint is not None:
            self.registry.find(str(checkpoint))
        if vae not in VAE_AUTOMATIC:
            self.registry.find_vae(str(vae))
        clip_skip = update.get("CLIP_stop_at_last_layers")
        if clip_skip is not None and (not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12):
            raise RequestFieldError("CLIP_stop_at_last_layers", f"must be an integer from 1 to 12, got {clip_skip!r}")
        with self.queue.hold():
            if checkpoint is not None or vae is not None:
                loaded = self._load(str(checkpoint or self.options.sd_model_checkpoint), vae or self.options.sd_vae)
                if checkpoint is not None:
                    self.options.sd_model_checkpoint = loaded.checkpoint.title
                if vae is not None:
                    self.options.sd_vae = str(vae)
            if clip_skip is not None:
                self.options.CLIP_stop_at_last_layers = clip_skip
            known = {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"}
            self.options.extra.update({k: v for k, v in update.items() if k not in known and _jsonable(v)})

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(self, request: Txt2ImgRequest, kind: str) -> dict[str, Any]:
        check_supported(request, self.max_pixels)
        try:
            choice = resolve(request.sampler_name or request.sampler_index, request.scheduler)
        except UnknownSamplerError as exc:
            raise RequestFieldError(exc.field, str(exc)) from exc
        prompt = strip_extra_networks(request.prompt, "prompt", request.disable_extra_networks)
        negative = strip_extra_networks(request.negative_prompt, "negative_prompt", request.disable_extra_networks)
        inputs = image_inputs(request) if isinstance(request, Img2ImgRequest) else None
        overrides = request.override_settings or {}
        checkpoint_name = str(overrides.get("sd_model_checkpoint") or self.options.sd_model_checkpoint)
        vae_name = overrides.get("sd_vae", self.options.sd_vae)
        self.registry.find(checkpoint_name)  # 404 before queueing
        if vae_name not in VAE_AUTOMATIC:
            self.registry.find_vae(str(vae_name))
        clip_skip = int(overrides.get("CLIP_stop_at_last_layers", self.options.CLIP_stop_at_last_layers))
        with self.queue.hold():
            loaded = self._load(checkpoint_name, vae_name)
            if not request.override_settings_restore_afterwards:
                self.options.sd_model_checkpoint = loaded.checkpoint.title
                self.options.sd_vae = str(vae_name or "Automatic")
            return self._run(Render(request, kind, choice, prompt, negative, inputs, loaded, clip_skip))

    def _run(self, render: Render) -> dict[str, Any]:
        request = render.request
        total = request.batch_size * request.n_iter
        seed = fixed_seed(request.seed)
        subseed = fixed_seed(request.subseed)
        # A1111's rule (processing.process_images_inner): with variation noise the seed stays, subseeds advance
        all_seeds = [seed + (i if request.subseed_strength == 0 else 0) for i in range(total)]
        all_subseeds = [subseed + i for i in range(total)]
        images: list[Image.Image] = []
        components = render.loaded.components
        use = LaneUse(None)
        if self.lanes is not None:
            use = self.lanes.prepare(components, request.batch_size, request.height, request.width)
            if use.split is not None and use.split.enabled:
                components = replace(components, unet=use.split)
        self.state.begin(f"scripts_{render.kind}", request.n_iter)
        try:
            for batch in range(request.n_iter):
                if self.state.interrupted:
                    break
                first = batch * request.batch_size
                indices = range(first, first + request.batch_size)
                spec = _batch_spec(render, all_seeds, all_subseeds, indices)
                self.state.begin_batch(
                    batch, request.batch_size, request.width, request.height, _steps_run(request, render.inputs)
                )
                images += render_batch(components, spec, self.state.after_step)
        finally:
            self.state.end()
            if self.lanes is not None:
                use = self.lanes.finish(use)
        params = [_params(render, all_seeds[i], all_subseeds[i], use.label) for i in range(len(images))]
        infotexts = [build_infotext(request.prompt, request.negative_prompt, p) for p in params]
        info = _info(render, seed, subseed, all_seeds, all_subseeds, infotexts)
        if use.label is not None:
            info["cfg_split"] = {
                "lanes": use.stats.lanes,
                "split_steps": use.stats.split_steps,
                "local_steps": use.stats.local_steps,
                "fell_back": use.stats.fell_back,
            }
        encoded = (
            [png_to_base64(image, text) for image, text in zip(images, infotexts, strict=True)]
            if request.send_images
            else []
        )
        parameters = request.model_dump()
        if isinstance(request, Img2ImgRequest) and not request.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        return {"images": encoded, "parameters": parameters, "info": json.dumps(info)}


def _batch_spec(render: Render, all_seeds: list[int], all_subseeds: list[int], indices: range) -> BatchSpec:
    request, inputs = render.request, render.inputs
    count = len(indices)
    return BatchSpec(
        prompts=[render.prompt] * count,
        negative_prompts=[render.negative] * count,
        seeds=[all_seeds[i] for i in indices],
        subseeds=[all_subseeds[i] for i in indices],
        subseed_strength=request.subseed_strength,
        width=request.width,
        height=request.height,
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        sampler=render.choice,
        clip_skip=render.clip_skip,
        init_images=inputs.init_images if inputs else None,
        denoising_strength=request.denoising_strength if inputs and request.denoising_strength is not None else 1.0,
        inpainting=inputs.inpainting if inputs else None,
    )


def _params(render: Render, seed: int, subseed: int, cfg_split: str | None = None) -> dict[str, ParamValue]:
    """The infotext's parameters, in A1111's order (processing.create_infotext)."""
    request, loaded, inputs = render.request, render.loaded, render.inputs
    variation = request.subseed_strength != 0
    return {
        "Steps": request.steps,
        "Sampler": render.choice.sampler.name,
        "Schedule type": render.choice.schedule.label,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": loaded.checkpoint.shorthash,
        "Model": loaded.checkpoint.model_name,
        "VAE": loaded.vae_name.rsplit(".", 1)[0] if loaded.vae_name else None,
        "Variation seed": subseed if variation else None,
        "Variation seed strength": request.subseed_strength if variation else None,
        "Denoising strength": request.denoising_strength if inputs else None,
        "Clip skip": render.clip_skip if render.clip_skip > 1 else None,
        "Mask blur": _mask_blur(request) if inputs and inputs.inpainting else None,
        "CFG split": cfg_split,
        "Version": VERSION_TEXT,
    }


def _info(
    render: Render, seed: int, subseed: int, all_seeds: list[int], all_subseeds: list[int], infotexts: list[str]
) -> dict[str, Any]:
    """The `info` JSON, shaped like A1111's Processed.js()."""
    request, loaded = render.request, render.loaded
    total = request.batch_size * request.n_iter
    return {
        "prompt": request.prompt,
        "all_prompts": [request.prompt] * total,
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [request.negative_prompt] * total,
        "seed": seed,
        "all_seeds": all_seeds,
        "subseed": subseed,
        "all_subseeds": all_subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": render.choice.sampler.name,
        "scheduler": render.choice.schedule.label,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": loaded.checkpoint.model_name,
        "sd_model_hash": loaded.checkpoint.shorthash,
        "sd_vae_name": loaded.vae_name,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": request.denoising_strength,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": "",
        "clip_skip": render.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": VERSION_TEXT,
    }


def _steps_run(request: Txt2ImgRequest, inputs: ImageInputs | None) -> int:
    if inputs is None or request.denoising_strength is None:
        return request.steps
    return max(1, min(int(request.steps * request.denoising_strength), request.steps))


def _mask_blur(request: Txt2ImgRequest) -> int | None:
    if not isinstance(request, Img2ImgRequest):
        return None
    return request.mask_blur if request.mask_blur is not None else max(request.mask_blur_x, request.mask_blur_y)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _dtype_for(device: str) -> Any:
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32
