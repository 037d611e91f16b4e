"""The headless worker's service: models, options and generation, independent of HTTP.

The FastAPI app (app.py) is a thin layer over this; tests of behaviour that needs no HTTP can use it directly.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import replace
from typing import Any

from PIL import Image

from distributed.images import png_to_base64
from distributed.infotext import build_infotext
from distributed.worker.checkpoints import CheckpointRegistry
from distributed.worker.components import Components
from distributed.worker.imageops import apply_overlay
from distributed.worker.jobs import FifoLock, JobState
from distributed.worker.lanes import CfgLanes, LaneUse
from distributed.worker.loader import ModelCache, load_vae
from distributed.worker.lora import find_loras
from distributed.worker.options import _OWN_KEYS, WorkerOptions, check_settings
from distributed.worker.pipeline import render_batch
from distributed.worker.render import LoadedModel, Render, batch_spec, info_json, infotext_params, steps_run
from distributed.worker.requests_check import (
    RequestFieldError,
    check_prompts,
    check_supported,
    extra_networks,
    hires_spec,
    image_inputs,
)
from distributed.worker.samplers import UnknownSamplerError, resolve
from distributed.worker.schemas import Img2ImgRequest, Txt2ImgRequest

logger = logging.getLogger(__name__)

VAE_AUTOMATIC = ("Automatic", "None", None, "")


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
        self.loras = find_loras(registry.models_dir)

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
        check_settings(update, "")
        clip_skip = update.get("CLIP_stop_at_last_layers")
        with self.queue.hold():
            if checkpoint is not None or vae is not None:
                loaded = self._load(str(checkpoint or self.options.sd_model_checkpoint), vae or self.options.sd_vae)
                if checkpoint is not None:
                    self.options.sd_model_checkpoint = loaded.checkpoint.title
                if vae is not None:
                    self.options.sd_vae = str(vae)
            if clip_skip is not None:
                self.options.CLIP_stop_at_last_layers = clip_skip
            self.options.extra.update({k: v for k, v in update.items() if k not in _OWN_KEYS and _jsonable(v)})

    def lora_listing(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/loras, in A1111's shape."""
        return [info.as_api() for info in self.loras.values()]

    def refresh_loras(self) -> None:
        self.loras = find_loras(self.registry.models_dir)

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(self, request: Txt2ImgRequest, kind: str) -> dict[str, Any]:
        check_supported(request, self.max_pixels)
        check_prompts(request)
        try:
            choice = resolve(request.sampler_name or request.sampler_index, request.scheduler)
        except UnknownSamplerError as exc:
            raise RequestFieldError(exc.field, str(exc)) from exc
        # A1111 reads extra networks from the prompt only (a tag in the negative prompt stays text)
        prompt, loras = extra_networks(request.prompt, "prompt", self.loras, request.disable_extra_networks)
        negative = request.negative_prompt
        inputs = image_inputs(request) if isinstance(request, Img2ImgRequest) else None
        hires, hires_loras = None, loras
        if not isinstance(request, Img2ImgRequest) and request.enable_hr:
            if request.hr_prompt:
                hr_prompt, hires_loras = extra_networks(
                    request.hr_prompt, "hr_prompt", self.loras, request.disable_extra_networks
                )
            hires = hires_spec(request, choice, prompt, negative, hr_prompt if request.hr_prompt else "")
        overrides = request.override_settings or {}
        checkpoint_name = str(overrides.get("sd_model_checkpoint") or self.options.sd_model_checkpoint)
        vae_name = overrides.get("sd_vae", self.options.sd_vae)
        self.registry.find(checkpoint_name)  # 404 before queueing
        if vae_name not in VAE_AUTOMATIC:
            self.registry.find_vae(str(vae_name))
        check_settings(overrides, "override_settings.")
        clip_skip = int(overrides.get("CLIP_stop_at_last_layers", self.options.CLIP_stop_at_last_layers))
        with self.queue.hold():
            loaded = self._load(checkpoint_name, vae_name)
            settings = {**self.options.as_dict(), **overrides}
            if not request.override_settings_restore_afterwards:  # A1111 keeps the overrides as options
                self.options.sd_model_checkpoint = loaded.checkpoint.title
                self.options.sd_vae = str(vae_name or "Automatic")
                self.options.CLIP_stop_at_last_layers = clip_skip
                self.options.extra.update({k: v for k, v in overrides.items() if k not in _OWN_KEYS and _jsonable(v)})
            render = Render(request, kind, choice, prompt, negative, inputs, loaded, clip_skip, settings, hires)
            render.loras, render.hires_loras = loras, hires_loras
            return self._run(render)

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
        if self.lanes is not None and not (render.loras or render.hires_loras or request.tiling):  # not on a peer
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
                spec = batch_spec(render, all_seeds, all_subseeds, indices)
                steps = steps_run(request, render.inputs) + (render.hires.steps if render.hires else 0)
                self.state.begin_batch(batch, request.batch_size, request.width, request.height, steps)
                rendered = render_batch(components, spec, self.state.after_step)
                if render.inputs is not None and render.inputs.overlays is not None:
                    overlays, paste_to = render.inputs.overlays, render.inputs.paste_to
                    rendered = [apply_overlay(im, paste_to, overlays[i]) for i, im in enumerate(rendered)]
                images += rendered
        finally:
            self.state.end()
            if self.lanes is not None:
                use = self.lanes.finish(use)
        texts = [infotext_params(render, all_seeds[i], all_subseeds[i], use.label) for i in range(len(images))]
        infotexts = [build_infotext(request.prompt, request.negative_prompt, p) for p in texts]
        report = info_json(render, seed, subseed, all_seeds, all_subseeds, infotexts)
        if use.label is not None:
            report["cfg_split"] = {
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
        if isinstance(request, Img2ImgRequest):  # A1111's img2img model has no hires fields
            parameters = {k: v for k, v in parameters.items() if not k.startswith(("hr_", "firstphase_", "enable_hr"))}
            if not request.include_init_images:
                parameters["init_images"] = None
                parameters["mask"] = None
        return {"images": encoded, "parameters": parameters, "info": json.dumps(report)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _dtype_for(device: str) -> Any:
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32
