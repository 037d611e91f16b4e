"""Turning a generation request into checked inputs; every refusal names the request field it is about."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from distributed.images import ImageDecodeError, decode_base64_image
from distributed.worker.hires import HIRES_UPSCALERS, HiresSpec, target_size
from distributed.worker.imageops import Box, prepare_img2img
from distributed.worker.lora import LoraError, LoraInfo, LoraUse, extract_lora_tags
from distributed.worker.lora import resolve as resolve_loras
from distributed.worker.pipeline import Inpainting
from distributed.worker.prompts import parse_attention, prompt_schedule, split_and
from distributed.worker.samplers import SamplerChoice, UnknownSamplerError, resolve
from distributed.worker.schemas import UNSUPPORTED, Img2ImgRequest, Txt2ImgRequest


class RequestFieldError(ValueError):
    """A request value this worker refuses; answered with HTTP 422 naming `field`."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class ImageInputs:
    init_images: list[Image.Image]  # what the VAE encodes, one per image of a batch
    inpainting: Inpainting | None
    overlays: list[Image.Image] | None = None  # pasted over each result (A1111's overlay_images)
    paste_to: Box | None = None  # "only masked": where the render goes back into the original
    inverted: bool = False  # "inpaint not masked"


def check_prompts(request: Txt2ImgRequest) -> None:
    """Parse every prompt once before queueing: a malformed weight or a nesting too deep is a 422 naming it."""
    for name in ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt"):
        text = getattr(request, name)
        try:
            for part, _ in split_and(text):
                prompt_schedule(part, request.steps)
                parse_attention(part)
        except RecursionError as exc:
            raise RequestFieldError(name, "brackets nested too deeply") from exc
        except ValueError as exc:
            raise RequestFieldError(name, f"cannot be parsed: {exc}") from exc


def check_supported(request: Txt2ImgRequest, max_pixels: int) -> None:
    for name, harmless in UNSUPPORTED:
        value = getattr(request, name, None)
        allowed = harmless if isinstance(harmless, tuple) else (harmless,)
        if value not in allowed:
            raise RequestFieldError(name, f"{value!r} is not supported by the headless worker")
    if request.styles:
        raise RequestFieldError("styles", "the headless worker has no saved styles")
    for script in request.alwayson_scripts:
        raise RequestFieldError(f"alwayson_scripts.{script}", "the headless worker has no such script")
    if request.seed_resize_from_w > 0 or request.seed_resize_from_h > 0:
        raise RequestFieldError("seed_resize_from_w", "seed resize is not supported by the headless worker")
    for name in ("width", "height"):
        if getattr(request, name) % 8:
            raise RequestFieldError(name, f"must be a multiple of 8, got {getattr(request, name)}")
    if request.width * request.height > max_pixels:
        raise RequestFieldError(
            "width", f"{request.width}x{request.height} is over this worker's limit of {max_pixels} pixels"
        )


def hires_spec(
    request: Txt2ImgRequest, choice: SamplerChoice, prompt: str, negative: str, hr_prompt: str
) -> HiresSpec | None:
    """The second pass a txt2img request asks for (`enable_hr`), checked; None without one. `hr_prompt` is the
    request's hires prompt with its extra-network tags cut out (empty: the first pass's prompt)."""
    if not request.enable_hr:
        return None
    upscaler = request.hr_upscaler or "Latent"  # A1111's latent_upscale_default_mode
    if upscaler not in HIRES_UPSCALERS:
        raise RequestFieldError(
            "hr_upscaler", f"{upscaler!r} is not available on this worker; it has: {', '.join(HIRES_UPSCALERS)}"
        )
    if request.denoising_strength is None:
        raise RequestFieldError("denoising_strength", "hires fix needs a denoising strength")
    if request.hr_scale <= 0 and not (request.hr_resize_x or request.hr_resize_y):
        raise RequestFieldError("hr_scale", f"must be above 0, got {request.hr_scale}")
    to_x, to_y, cut_x, cut_y = target_size(
        request.width, request.height, request.hr_scale, request.hr_resize_x, request.hr_resize_y
    )
    if to_x % 8 or to_y % 8 or to_x < 8 or to_y < 8:
        raise RequestFieldError("hr_scale", f"the hires size {to_x}x{to_y} must be positive multiples of 8")
    if to_x * to_y > request.width * request.height * 64:
        raise RequestFieldError("hr_scale", f"{to_x}x{to_y} is over 8 times the first pass each way")
    hr_choice = choice
    if request.hr_sampler_name or request.hr_scheduler:
        try:
            hr_choice = resolve(
                request.hr_sampler_name or choice.sampler.name, request.hr_scheduler or request.scheduler
            )
        except UnknownSamplerError as exc:
            raise RequestFieldError("hr_" + exc.field, str(exc)) from exc
    count = request.batch_size
    return HiresSpec(
        width=to_x,
        height=to_y,
        truncate_x=cut_x,
        truncate_y=cut_y,
        upscaler=upscaler,
        steps=request.hr_second_pass_steps or request.steps,
        denoising_strength=request.denoising_strength,
        sampler=hr_choice,
        prompts=[hr_prompt or prompt] * count,
        negative_prompts=[request.hr_negative_prompt or negative] * count,
    )


def extra_networks(
    prompt: str, field_name: str, loras: Mapping[str, LoraInfo], disabled: bool
) -> tuple[str, list[LoraUse]]:
    """Cut A1111's `<lora:name:weight>` style tags out of a prompt and find their files (none when disabled)."""
    try:
        text, tags = extract_lora_tags(prompt)
        return text, ([] if disabled else resolve_loras(tags, loras))
    except LoraError as exc:
        raise RequestFieldError(field_name, str(exc)) from exc


def decode_field(text: str, field_name: str) -> Image.Image:
    """A base64 picture from a request field; a bad one is a 422 naming the field."""
    try:
        return decode_base64_image(text)
    except ImageDecodeError as exc:
        raise RequestFieldError(field_name, str(exc)) from exc


def image_inputs(request: Img2ImgRequest) -> ImageInputs:
    if not request.init_images:
        raise RequestFieldError("init_images", "img2img needs at least one init image")
    if len(request.init_images) not in (1, request.batch_size):
        raise RequestFieldError(
            "init_images",
            f"{len(request.init_images)} images for batch_size {request.batch_size}; send 1 or one per image",
        )
    decoded = [decode_field(text, f"init_images[{i}]") for i, text in enumerate(request.init_images)]
    if request.resize_mode == 3 and any(image.size != decoded[0].size for image in decoded):
        raise RequestFieldError("init_images", "resize mode 3 needs init images of one size")
    mask = decode_field(request.mask, "mask") if request.mask else None
    blur_x = request.mask_blur if request.mask_blur is not None else request.mask_blur_x
    blur_y = request.mask_blur if request.mask_blur is not None else request.mask_blur_y
    prepared = prepare_img2img(
        decoded,
        mask,
        width=request.width,
        height=request.height,
        resize_mode=request.resize_mode,
        mask_round=request.mask_round,
        invert=bool(request.inpainting_mask_invert),
        blur=(blur_x, blur_y),
        full_res=request.inpaint_full_res,
        padding=request.inpaint_full_res_padding,
        inpainting_fill=request.inpainting_fill,
    )
    images = prepared.images * request.batch_size if len(prepared.images) == 1 else prepared.images
    overlays = prepared.overlays
    if overlays is not None and len(overlays) == 1:
        overlays = overlays * request.batch_size
    inpainting = None
    if prepared.latent_mask is not None:
        inpainting = Inpainting(prepared.latent_mask, request.inpainting_fill, request.mask_round)
    return ImageInputs(images, inpainting, overlays, prepared.paste_to, bool(request.inpainting_mask_invert))
