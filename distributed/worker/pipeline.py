"""The sampling loop: prompts to latents to pixels, one batch at a time, each image with its own generator.

Image i of a batch draws its initial noise (and any ancestral noise later) from a generator seeded with its own seed,
so it equals a single-image run with that seed. Variation noise is mixed in with A1111's slerp.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from distributed.worker.components import Components
from distributed.worker.samplers import SamplerChoice, make_scheduler

# Called after every sampling step with (steps done, steps in this batch); True stops the batch early.
StepCallback = Callable[[int, int], bool]


class NansError(RuntimeError):
    """The model produced NaNs (A1111 raises its NansException in the same situation)."""


@dataclass
class Inpainting:
    mask: Image.Image  # "L", image-sized, white = repaint, already inverted and blurred as requested
    fill: int  # A1111's inpainting_fill: 0 fill, 1 original, 2 latent noise, 3 latent nothing
    round_latent_mask: bool


@dataclass
class BatchSpec:
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: SamplerChoice
    clip_skip: int = 1
    init_images: list[Image.Image] | None = None  # one per image, already resized to width x height
    denoising_strength: float = 1.0
    inpainting: Inpainting | None = None


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's `processing.slerp`, norms along dim 1, linear when the two are nearly parallel."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def initial_noise(
    shape: tuple[int, ...], seeds: list[int], subseeds: list[int], strength: float
) -> tuple[torch.Tensor, list[torch.Generator]]:
    noises = []
    generators = []
    for seed, subseed in zip(seeds, subseeds, strict=True):
        subnoise = None
        if strength > 0:
            subnoise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(subseed))
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator)
        if subnoise is not None:
            noise = slerp(strength, noise, subnoise)
        noises.append(noise)
        generators.append(generator)
    return torch.stack(noises), generators


def encode_prompts(components: Components, prompts: list[str], clip_skip: int) -> torch.Tensor:
    tokenizer = components.tokenizer
    tokens = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    encoder = components.text_encoder
    if clip_skip <= 1:
        return encoder(tokens.input_ids.to(components.device))[0]
    hidden = encoder(tokens.input_ids.to(components.device), output_hidden_states=True).hidden_states[-clip_skip]
    # transformers 4.x keeps the layers under `text_model`; 5.x puts them on the model itself
    return getattr(encoder, "text_model", encoder).final_layer_norm(hidden)


def _image_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _latent_mask(inpainting: Inpainting, latent_size: tuple[int, int]) -> torch.Tensor:
    small = inpainting.mask.resize((latent_size[1], latent_size[0]), Image.Resampling.BILINEAR)
    mask = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)
    if inpainting.round_latent_mask:
        mask = torch.round(mask)
    return mask[None, None]


def _fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill": paint the masked area with the colours around it before encoding (a heavy blur here)."""
    blurred = image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=max(image.size) / 8))
    return Image.composite(blurred, image.convert("RGB"), mask)


def _accepts_generator(scheduler: object) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters  # type: ignore[attr-defined]


def render_batch(components: Components, spec: BatchSpec, on_step: StepCallback) -> list[Image.Image]:
    """Render one batch; stops early (and still decodes) when `on_step` says so."""
    with torch.inference_mode():
        return _render_batch(components, spec, on_step)


def _render_batch(components: Components, spec: BatchSpec, on_step: StepCallback) -> list[Image.Image]:
    count = len(spec.seeds)
    factor = components.vae_scale_factor
    latent_shape = (4, spec.height // factor, spec.width // factor)
    noise, generators = initial_noise(latent_shape, spec.seeds, spec.subseeds, spec.subseed_strength)
    noise = noise.to(components.device, components.dtype)
    context = torch.cat(
        [
            encode_prompts(components, spec.negative_prompts, spec.clip_skip),
            encode_prompts(components, spec.prompts, spec.clip_skip),
        ]
    )
    scheduler = make_scheduler(spec.sampler, components.scheduler_config)
    scheduler.set_timesteps(spec.steps)
    timesteps = scheduler.timesteps
    init_latents = None
    latent_mask = None
    if spec.init_images is not None:
        sources = spec.init_images
        if spec.inpainting is not None and spec.inpainting.fill == 0:
            sources = [_fill_masked(image, spec.inpainting.mask) for image in sources]
        pixels = torch.stack([_image_to_tensor(image) for image in sources]).to(components.device, components.dtype)
        init_latents = components.vae.encode(pixels).latent_dist.mode() * components.latent_scale
        if spec.inpainting is not None:
            latent_mask = _latent_mask(spec.inpainting, latent_shape[1:]).to(components.device, components.dtype)
            if spec.inpainting.fill == 2:
                init_latents = init_latents * (1 - latent_mask) + noise * latent_mask
            elif spec.inpainting.fill == 3:
                init_latents = init_latents * (1 - latent_mask)
        keep = min(int(spec.steps * spec.denoising_strength), spec.steps)
        start = max(spec.steps - keep, 0) * scheduler.order
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        if len(timesteps) == 0:
            latents = init_latents
        else:
            latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(count))
    else:
        latents = noise * scheduler.init_noise_sigma
    step_kwargs = {"generator": generators} if _accepts_generator(scheduler) else {}
    total = len(timesteps)
    for index, timestep in enumerate(timesteps):
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
        predicted = components.unet(model_input, timestep, encoder_hidden_states=context).sample
        uncond, cond = predicted.chunk(2)
        guided = uncond + spec.cfg_scale * (cond - uncond)
        latents = scheduler.step(guided, timestep, latents, **step_kwargs).prev_sample
        if latent_mask is not None and init_latents is not None and index + 1 < total:
            renoised = scheduler.add_noise(init_latents, noise, timesteps[index + 1 : index + 2].repeat(count))
            latents = renoised * (1 - latent_mask) + latents * latent_mask
        if on_step(index + 1, total):
            break
    if latent_mask is not None and init_latents is not None:
        latents = init_latents * (1 - latent_mask) + latents * latent_mask
    if not torch.isfinite(latents).all():
        raise NansError("A tensor with NaNs or infinities was produced by the UNet (try a lower CFG scale).")
    decoded = components.vae.decode(latents / components.latent_scale).sample
    if not torch.isfinite(decoded).all():
        raise NansError("A tensor with NaNs was produced by the VAE.")
    pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(array) for array in pixels]
    if spec.inpainting is not None and spec.init_images is not None:
        images = [
            Image.composite(image, original.convert("RGB"), spec.inpainting.mask)
            for image, original in zip(images, spec.init_images, strict=True)
        ]
    return images
