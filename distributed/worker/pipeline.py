"""The sampling loop: prompts to latents to pixels, one batch at a time, as A1111 1.10.1 renders them.

Noise comes from ImageNoise (one generator per image, A1111's rule), guidance from denoiser.Guidance, the steps from
A1111's own algorithms (kdiffusion.py, DDIM below) on A1111's noise schedule; images are decoded one at a time and
turned into bytes the way A1111 does (clamp, times 255, truncated). Samplers run by diffusers (DPM++ 2M SDE, UniPC,
PLMS) use the same noise and guidance with diffusers' step rule.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from distributed.worker.components import Components
from distributed.worker.conditioning import encode_multicond, encode_schedule
from distributed.worker.denoiser import Blend, EpsDenoiser, Guidance, KDenoiser, MultiCond, ScheduledCond
from distributed.worker.hires import LATENT_UPSCALERS, HiresSpec
from distributed.worker.imageops import resize_image
from distributed.worker.kdiffusion import K_SAMPLERS, SamplerParams, sigma_schedule
from distributed.worker.noise import ImageNoise
from distributed.worker.samplers import SamplerChoice, make_scheduler
from distributed.worker.vae import decode_images, encode_images, tiling

# Called after every sampling step with (steps done, steps in this batch); True stops the batch early.
StepCallback = Callable[[int, int], bool]
# (components, prompt text, steps, hires steps or None, is a negative prompt) -> the prompt's conditioning for every
# model call of a pass
PromptEncoder = Callable[[Components, str, int, int | None, bool], MultiCond]


@dataclass
class Inpainting:
    mask: Image.Image  # "L", the size of the image rendered, white = repaint (after invert, blur and any crop)
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
    init_images: list[Image.Image] | None = None  # one per image, already prepared at width x height
    denoising_strength: float = 1.0
    inpainting: Inpainting | None = None
    params: SamplerParams = field(default_factory=SamplerParams)
    randn_source: str = "CPU"
    ensd: int = 0
    initial_noise_multiplier: float = 1.0
    s_min_uncond: float = 0.0
    emphasis: str = "Original"
    encoder: PromptEncoder | None = None  # default: a1111_encoder(clip_skip, emphasis)
    hires: HiresSpec | None = None
    # extra networks merged around a pass (argument: the hires pass); A1111 applies LoRAs before encoding prompts
    networks: Callable[[bool], AbstractContextManager[None]] | None = None
    tiling: bool = False
    img2img_fix_steps: bool = False  # A1111's option: img2img runs exactly `steps` steps
    latent_fill_seeds: list[int] | None = None  # A1111 draws "latent noise" fill from the request's first seeds


def encode_prompts(components: Components, prompts: list[str], clip_skip: int) -> torch.Tensor:
    """Plain CLIP encoding of a batch of short prompts (no A1111 syntax): what training conditions on."""
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


def a1111_encoder(clip_skip: int, emphasis: str = "Original") -> PromptEncoder:
    """A1111's prompt handling: AND parts (positive prompts only), prompt editing, emphasis, chunks of 75 tokens."""

    def encode(components: Components, text: str, steps: int, hires_steps: int | None, negative: bool) -> MultiCond:
        args = (components.tokenizer, components.text_encoder, text, steps, clip_skip, emphasis, hires_steps)
        parts = [(1.0, encode_schedule(*args))] if negative else encode_multicond(*args)
        return MultiCond(
            tuple((ScheduledCond(tuple((end, z[0]) for end, z in schedule)), weight) for weight, schedule in parts)
        )

    return encode


def unet_call(components: Components) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = components.unet(x, t, encoder_hidden_states=cond.to(x.device, x.dtype))
        result: torch.Tensor = out.sample if hasattr(out, "sample") else out[0]
        if components.prediction_type == "v_prediction":  # A1111's CompVisVDenoiser / CompVisTimestepsVDenoiser
            sigma = components.noise_schedule().t_to_sigma(t.cpu()).to(x.device, x.dtype).reshape(-1, 1, 1, 1)
            a = 1 / (1 + sigma**2)  # alpha_bar at this noise level
            result = a.sqrt() * result + (1 - a).sqrt() * x  # eps from v, on the scaled input
        return result

    return call


def render_batch(components: Components, spec: BatchSpec, on_step: StepCallback) -> list[Image.Image]:
    """Render one batch; stops early (and still decodes) when `on_step` says so."""
    with tiling(components, spec.tiling):
        return _render_batch(components, spec, on_step)


def _render_batch(components: Components, spec: BatchSpec, on_step: StepCallback) -> list[Image.Image]:
    networks = spec.networks or (lambda hires: nullcontext())
    if spec.hires is None:
        with networks(False), torch.inference_mode():
            return decode_images(components, sample_latents(components, spec, on_step))
    later, first = spec.hires.steps, spec.steps
    with networks(False), torch.inference_mode():
        latents = sample_latents(components, spec, lambda done, total: on_step(done, total + later))
    if on_step(first, first + later):  # stopping between the passes returns the first pass, as A1111 does
        with torch.inference_mode():
            return decode_images(components, latents)
    with networks(True), torch.inference_mode():
        latents = hires_pass(
            components, spec, spec.hires, latents, lambda done, total: on_step(first + done, first + total)
        )
        return decode_images(components, latents)


def hires_pass(
    components: Components, spec: BatchSpec, hires: HiresSpec, samples: torch.Tensor, on_step: StepCallback
) -> torch.Tensor:
    """A1111's sample_hr_pass: enlarge the first pass's latents, then an img2img pass of exactly `hires.steps`."""
    factor = components.vae_scale_factor
    if hires.upscaler in LATENT_UPSCALERS:
        mode, antialias = LATENT_UPSCALERS[hires.upscaler]
        size = (hires.height // factor, hires.width // factor)
        samples = torch.nn.functional.interpolate(samples, size=size, mode=mode, antialias=antialias)
    else:
        pictures = decode_images(components, samples)
        resized = [resize_image(0, image, hires.width, hires.height, hires.upscaler) for image in pictures]
        samples = encode_images(components, resized)
    ty, tx = hires.truncate_y, hires.truncate_x
    samples = samples[:, :, ty // 2 : samples.shape[2] - (ty + 1) // 2, tx // 2 : samples.shape[3] - (tx + 1) // 2]
    noise = ImageNoise(
        tuple(samples.shape[1:]),
        spec.seeds,
        spec.subseeds,
        spec.subseed_strength,
        source=spec.randn_source,
        device=components.device,
        ensd=spec.ensd,
    )
    second = replace(
        spec,
        prompts=hires.prompts,
        negative_prompts=hires.negative_prompts,
        sampler=hires.sampler,
        denoising_strength=hires.denoising_strength,
        hires=None,
    )
    guidance = _guidance(components, second, total_steps(spec), total_steps(replace(second, steps=hires.steps)))
    x = noise.next().to(components.dtype)
    return run_sampler(components, second, guidance, noise, x, samples, None, on_step, fixed_steps=hires.steps)


def total_steps(spec: BatchSpec) -> int:
    """A1111's SamplerData.total_steps: the step count prompt editing is measured in (doubled for second order)."""
    return spec.steps * 2 if spec.sampler.sampler.second_order else spec.steps


def _guidance(components: Components, spec: BatchSpec, steps: int, hires_steps: int | None = None) -> Guidance:
    encoder = spec.encoder or a1111_encoder(spec.clip_skip, spec.emphasis)
    cache: dict[tuple[str, bool], MultiCond] = {}
    for text, negative in [*((t, False) for t in spec.prompts), *((t, True) for t in spec.negative_prompts)]:
        if (text, negative) not in cache:
            cache[text, negative] = encoder(components, text, steps, hires_steps, negative)
    conds = [cache[text, False] for text in spec.prompts]
    unconds = [cache[text, True].parts[0][0] for text in spec.negative_prompts]
    return Guidance(conds, unconds, spec.cfg_scale, spec.s_min_uncond)


def _latent_mask(inpainting: Inpainting, shape: tuple[int, ...]) -> torch.Tensor:
    small = inpainting.mask.convert("RGB").resize((shape[-1], shape[-2]))
    mask = np.moveaxis(np.array(small, dtype=np.float32), 2, 0)[0] / 255
    if inpainting.round_latent_mask:
        mask = np.around(mask)
    return torch.from_numpy(np.tile(mask[None], (shape[1], 1, 1)))


def sample_latents(components: Components, spec: BatchSpec, on_step: StepCallback) -> torch.Tensor:
    factor = components.vae_scale_factor
    shape = (4, spec.height // factor, spec.width // factor)
    device, dtype = components.device, components.dtype
    noise = ImageNoise(
        shape, spec.seeds, spec.subseeds, spec.subseed_strength, source=spec.randn_source, device=device, ensd=spec.ensd
    )
    guidance = _guidance(components, spec, total_steps(spec))
    blend = None
    if spec.init_images is None:
        x = noise.next().to(dtype)
        return run_sampler(components, spec, guidance, noise, x, None, None, on_step)
    init_latent = encode_images(components, spec.init_images)
    if init_latent.shape[-2:] != shape[-2:]:  # resize mode 3: "just resize (latent upscale)"
        init_latent = torch.nn.functional.interpolate(init_latent, size=shape[-2:], mode="bilinear")
    if spec.inpainting is not None:
        latmask = _latent_mask(spec.inpainting, tuple(init_latent.shape)).to(device, dtype)
        keep = 1.0 - latmask
        if spec.inpainting.fill == 2:
            fill_seeds = (spec.latent_fill_seeds or spec.seeds)[: len(spec.seeds)]
            fill = ImageNoise(shape, fill_seeds, source=spec.randn_source, device=device).first().to(dtype)
            init_latent = init_latent * keep + fill * latmask
        elif spec.inpainting.fill == 3:
            init_latent = init_latent * keep
        blend = Blend(init_latent, keep, latmask)
    x = noise.next().to(dtype)
    if spec.initial_noise_multiplier != 1.0:
        x = x * spec.initial_noise_multiplier
    fixed = spec.steps if spec.img2img_fix_steps else None
    samples = run_sampler(components, spec, guidance, noise, x, init_latent, blend, on_step, fixed_steps=fixed)
    if blend is not None:
        samples = samples * blend.repaint + init_latent * blend.keep
    return samples


def img2img_steps(steps: int, denoising_strength: float, fixed_steps: int | None = None) -> tuple[int, int]:
    """A1111's setup_img2img_steps: (schedule length, steps actually run - 1)."""
    if fixed_steps is not None:
        total = int(fixed_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
        return total, fixed_steps - 1
    return steps, int(min(denoising_strength, 0.999) * steps)


def run_sampler(
    components: Components,
    spec: BatchSpec,
    guidance: Guidance,
    noise: ImageNoise,
    x: torch.Tensor,
    init_latent: torch.Tensor | None,
    blend: Blend | None,
    on_step: StepCallback,
    fixed_steps: int | None = None,
) -> torch.Tensor:
    """One sampling pass: txt2img from `x` when `init_latent` is None, else img2img of `init_latent` with noise `x`."""
    sampler = spec.sampler.sampler
    unet = unet_call(components)
    schedule = components.noise_schedule()
    if sampler.engine == "k":
        steps, t_enc = (
            (spec.steps, spec.steps - 1)
            if init_latent is None
            else (img2img_steps(spec.steps, spec.denoising_strength, fixed_steps))
        )
        sigmas = sigma_schedule(spec.sampler.effective_schedule, schedule, steps, sampler.discard_penultimate)
        if init_latent is None:
            start = x * sigmas[0]
        else:
            sigmas = sigmas[steps - t_enc - 1 :]
            start = init_latent + x * sigmas[0]
        total = len(sigmas) - 1
        params = spec.params
        if not sampler.uses_churn:
            params = SamplerParams(eta=params.eta, s_noise=params.s_noise)
        model = KDenoiser(unet, schedule, guidance, blend)
        return K_SAMPLERS[sampler.k_name](
            model, start, sigmas, params, lambda: noise.next().to(x.dtype), lambda i: on_step(i + 1, total)
        )
    if sampler.engine == "ddim":
        return _ddim(components, spec, guidance, noise, x, init_latent, blend, on_step, fixed_steps)
    return _diffusers(components, spec, guidance, x, init_latent, blend, on_step, fixed_steps)


def _ddim(
    components: Components,
    spec: BatchSpec,
    guidance: Guidance,
    noise: ImageNoise,
    x: torch.Tensor,
    init_latent: torch.Tensor | None,
    blend: Blend | None,
    on_step: StepCallback,
    fixed_steps: int | None,
) -> torch.Tensor:
    """A1111's DDIM: timesteps 1, 1+1000//n, ...; one model call fewer than steps; eta scales fresh noise."""
    alphas_cumprod = components.noise_schedule().alphas_cumprod
    steps, t_enc = (
        (spec.steps, 0) if init_latent is None else img2img_steps(spec.steps, spec.denoising_strength, fixed_steps)
    )
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    if init_latent is not None:
        a = alphas_cumprod[timesteps[t_enc]]
        x = init_latent * torch.sqrt(a) + x * torch.sqrt(1 - a)
        timesteps = timesteps[:t_enc]
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].double()
    eta = spec.params.eta
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas).double() * (1 - alphas.double() / alphas_prev))
    model = EpsDenoiser(unet_call(components), guidance, blend)
    ones = x.new_ones((x.shape[0], 1, 1, 1))
    total = len(timesteps) - 1
    for i in range(total):
        index = len(timesteps) - 1 - i
        e_t = model(x, float(timesteps[index].item()) * x.new_ones((x.shape[0],)))
        a_t = alphas[index].item() * ones
        a_prev = alphas_prev[index].item() * ones
        sigma_t = sigmas[index].item() * ones
        pred_x0 = (x - torch.sqrt(1 - alphas[index]).item() * ones * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        x = a_prev.sqrt() * pred_x0 + dir_xt + sigma_t * noise.next().to(x.dtype)
        if on_step(i + 1, total):
            break
    return x


def _diffusers(
    components: Components,
    spec: BatchSpec,
    guidance: Guidance,
    x: torch.Tensor,
    init_latent: torch.Tensor | None,
    blend: Blend | None,
    on_step: StepCallback,
    fixed_steps: int | None,
) -> torch.Tensor:
    """Samplers A1111 runs with code of its own that is not reproduced here: diffusers' step rule."""
    scheduler = make_scheduler(spec.sampler, components.scheduler_config)
    scheduler.set_timesteps(fixed_steps or spec.steps)
    timesteps = scheduler.timesteps
    if init_latent is not None:
        keep = min(int(spec.steps * spec.denoising_strength), spec.steps) if fixed_steps is None else fixed_steps
        start = max(len(timesteps) - keep * scheduler.order, 0)
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        latents = scheduler.add_noise(init_latent, x, timesteps[:1].repeat(x.shape[0])) if len(timesteps) else x
    else:
        latents = x * scheduler.init_noise_sigma
    unet = unet_call(components)
    total = len(timesteps)
    for index, timestep in enumerate(timesteps):
        model_input = scheduler.scale_model_input(latents, timestep)
        time = timestep.float() * torch.ones(latents.shape[0])
        guided = guidance(model_input, time, lambda x_in, t_in, cond: unet(x_in, t_in.to(x_in.device), cond))
        latents = scheduler.step(guided, timestep, latents).prev_sample
        if blend is not None and init_latent is not None and index + 1 < total:
            renoised = scheduler.add_noise(init_latent, x, timesteps[index + 1 : index + 2].repeat(x.shape[0]))
            latents = renoised * blend.keep + latents * blend.repaint
        if on_step(index + 1, total):
            break
    return latents
