"""Turning a generation request into checked inputs; every refusal names the request field it is about."""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from distributed.images import ImageDecodeError, decode_base64_image
from distributed.worker.pipeline import Inpainting
from distributed.worker.schemas import UNSUPPORTED, Img2ImgRequest, Txt2ImgRequest

# A1111's extra-network syntax: <lora:name:1.0>, <hypernet:name:0.5>, ...
EXTRA_NETWORK_RE = re.compile(r"<(\w+):([^>:]+)(?::[^>]*)?>")


class RequestFieldError(ValueError):
    """A request value this worker refuses; answered with HTTP 422 naming `field`."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class ImageInputs:
    init_images: list[Image.Image]
    inpainting: Inpainting | None


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


def strip_extra_networks(prompt: str, field_name: str, disabled: bool) -> str:
    """Remove <lora:...> style tags; refuse them unless extra networks are disabled (this worker has none)."""
    match = EXTRA_NETWORK_RE.search(prompt)
    if match and not disabled:
        raise RequestFieldError(field_name, f"{match.group(1)} {match.group(2)!r} is not available on this worker")
    return EXTRA_NETWORK_RE.sub("", prompt)


def resize_image(image: Image.Image, mode: int, width: int, height: int) -> Image.Image:
    """A1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill, 3 (latent upscale) as 0."""
    image = image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == 2:
        inner = ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)
        canvas = image.resize((width, height), Image.Resampling.LANCZOS)
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _decode(text: str, field_name: str) -> Image.Image:
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
    images = [
        resize_image(_decode(text, f"init_images[{i}]"), request.resize_mode, request.width, request.height).convert(
            "RGB"
        )
        for i, text in enumerate(request.init_images)
    ]
    if len(images) == 1:
        images = images * request.batch_size
    inpainting = None
    if request.mask:
        mask = _decode(request.mask, "mask").convert("L")
        if request.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        mask = resize_image(mask, request.resize_mode, request.width, request.height).convert("L")
        blur_x = request.mask_blur if request.mask_blur is not None else request.mask_blur_x
        blur_y = request.mask_blur if request.mask_blur is not None else request.mask_blur_y
        if blur_x or blur_y:
            mask = mask.filter(ImageFilter.GaussianBlur(radius=(blur_x, blur_y)))
        inpainting = Inpainting(mask=mask, fill=request.inpainting_fill, round_latent_mask=request.mask_round)
    return ImageInputs(images, inpainting)
