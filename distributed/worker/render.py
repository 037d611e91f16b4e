"""One generation request, checked and resolved: its batches for the sampling loop and its infotexts."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from distributed import __version__
from distributed.infotext import ParamValue
from distributed.worker.checkpoints import CheckpointInfo
from distributed.worker.components import Components
from distributed.worker.hires import HiresSpec
from distributed.worker.kdiffusion import SamplerParams
from distributed.worker.lora import LoraInfo, LoraUse, applied, read_metadata
from distributed.worker.pipeline import BatchSpec
from distributed.worker.requests_check import ImageInputs
from distributed.worker.samplers import SamplerChoice
from distributed.worker.schemas import Img2ImgRequest, Txt2ImgRequest

VERSION_TEXT = f"distributed-worker {__version__}"


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
    settings: dict[str, Any] = field(default_factory=dict)  # the options with this request's overrides
    hires: HiresSpec | None = None
    loras: list[LoraUse] = field(default_factory=list)  # merged for the first pass
    hires_loras: list[LoraUse] = field(default_factory=list)  # for the hires pass (the hires prompt's tags)

    @cached_property
    def lora_hashes(self) -> str | None:
        """A1111's `Lora hashes` infotext value: "name: shorthash, ..." for the first pass's LoRAs."""
        if not self.loras:
            return None
        infos = [LoraInfo(use.path.stem, use.path, read_metadata(use.path)) for use in self.loras]
        return ", ".join(f"{info.name}: {info.shorthash()}" for info in infos)

    def networks(self, hires: bool) -> AbstractContextManager[None]:
        uses = self.hires_loras if hires else self.loras
        return applied(self.loaded.components, uses) if uses else nullcontext()


_CHURN_DEFAULTS = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}


def churn_options(render: Render) -> dict[str, float]:
    """The churn options that differ from the sampler's defaults: in A1111 these win over the request's fields."""
    settings = render.settings
    values = {key: float(settings[key]) for key in _CHURN_DEFAULTS}
    values["s_tmax"] = values["s_tmax"] or math.inf  # 0 means infinity
    return {key: value for key, value in values.items() if value != _CHURN_DEFAULTS[key]}


def sampler_params(render: Render) -> SamplerParams:
    """A1111's Sampler.initialize: eta from the request, else the sampler family's option; churn from the request,
    except where an option differs from the sampler's default (then the option, as A1111 does)."""
    request, settings, sampler = render.request, render.settings, render.choice.sampler
    eta_default = settings["eta_ddim"] if sampler.engine == "ddim" else settings["eta_ancestral"]
    options = churn_options(render)

    def pick(key: str) -> float:
        given = getattr(request, key)
        value = options.get(key, given if given is not None else _CHURN_DEFAULTS[key])
        return math.inf if key == "s_tmax" and not value else float(value)

    return SamplerParams(
        eta=float(request.eta if request.eta is not None else eta_default),
        s_churn=pick("s_churn"),
        s_tmin=pick("s_tmin"),
        s_tmax=pick("s_tmax"),
        s_noise=pick("s_noise"),
    )


def batch_spec(render: Render, all_seeds: list[int], all_subseeds: list[int], indices: range) -> BatchSpec:
    request, inputs, settings = render.request, render.inputs, render.settings
    count = len(indices)
    multiplier = getattr(request, "initial_noise_multiplier", None)
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
        hires=render.hires,
        networks=render.networks,
        params=sampler_params(render),
        randn_source=str(settings["randn_source"]),
        ensd=int(settings["eta_noise_seed_delta"] or 0),
        initial_noise_multiplier=float(multiplier if multiplier is not None else settings["initial_noise_multiplier"]),
        s_min_uncond=float(request.s_min_uncond if request.s_min_uncond is not None else settings["s_min_uncond"]),
        img2img_fix_steps=bool(settings["img2img_fix_steps"]),
        tiling=bool(request.tiling if request.tiling is not None else settings["tiling"]),
        emphasis=str(settings["emphasis"]),
        latent_fill_seeds=all_seeds[: request.batch_size],
    )


def hires_params(render: Render) -> dict[str, ParamValue]:
    hires, request = render.hires, render.request
    if hires is None:
        return {}
    resized = bool(request.hr_resize_x or request.hr_resize_y)
    return {
        "Hires prompt": hires.prompts[0] if hires.prompts[0] != render.prompt else None,
        "Hires negative prompt": hires.negative_prompts[0] if hires.negative_prompts[0] != render.negative else None,
        "Hires upscale": None if resized else request.hr_scale,
        "Hires resize": f"{request.hr_resize_x}x{request.hr_resize_y}" if resized else None,
        "Hires steps": request.hr_second_pass_steps or None,
        "Hires upscaler": request.hr_upscaler,
        "Hires sampler": hires.sampler.sampler.name if hires.sampler.sampler != render.choice.sampler else None,
    }


def infotext_params(render: Render, seed: int, subseed: int, cfg_split: str | None = None) -> dict[str, ParamValue]:
    """The infotext's parameters, in A1111's order (processing.create_infotext)."""
    request, loaded, inputs = render.request, render.loaded, render.inputs
    spec = batch_spec(render, [seed], [subseed], range(1))
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
        "Denoising strength": request.denoising_strength if inputs or render.hires else None,
        "Clip skip": render.clip_skip if render.clip_skip > 1 else None,
        "Tiling": "True" if spec.tiling else None,
        "Emphasis": spec.emphasis if spec.emphasis != "Original" and any(c in request.prompt for c in "([") else None,
        "ENSD": spec.ensd if spec.ensd and render.choice.sampler.uses_eta else None,
        **eta_params(render, spec.params.eta),
        "Sigma churn": churn_options(render).get("s_churn") if render.choice.sampler.uses_churn else None,
        "RNG": spec.randn_source if spec.randn_source != "GPU" else None,
        "Noise multiplier": spec.initial_noise_multiplier if spec.initial_noise_multiplier != 1.0 else None,
        "Mask blur": mask_blur(request) or None if inputs and inputs.inpainting else None,
        "Mask mode": "Inpaint not masked" if inputs and inputs.inpainting and inputs.inverted else None,
        "Masked content": _MASKED_CONTENT.get(inputs.inpainting.fill) if inputs and inputs.inpainting else None,
        "Inpaint area": "Only masked" if inputs and inputs.paste_to else None,
        "Masked area padding": getattr(request, "inpaint_full_res_padding", None)
        if inputs and inputs.paste_to
        else None,
        **hires_params(render),
        "Lora hashes": render.lora_hashes,
        "CFG split": cfg_split,
        "Version": VERSION_TEXT,
    }


def info_json(
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


def steps_run(request: Txt2ImgRequest, inputs: ImageInputs | None) -> int:
    if inputs is None or request.denoising_strength is None:
        return request.steps
    return max(1, min(int(request.steps * request.denoising_strength), request.steps))


_MASKED_CONTENT = {0: "fill", 2: "latent noise", 3: "latent nothing"}


def eta_params(render: Render, eta: float) -> dict[str, ParamValue]:
    """A1111 writes eta only for samplers that take it, and only when it is not the sampler's default."""
    sampler = render.choice.sampler
    if not sampler.uses_eta:
        return {}
    if sampler.engine == "ddim":
        return {"Eta DDIM": eta} if eta != 0.0 else {}
    return {"Eta": eta} if eta != 1.0 else {}


def mask_blur(request: Txt2ImgRequest) -> int | None:
    if not isinstance(request, Img2ImgRequest):
        return None
    return request.mask_blur if request.mask_blur is not None else max(request.mask_blur_x, request.mask_blur_y)
