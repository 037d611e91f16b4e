"""A1111's "Extras" tab over the API, for what a headless worker has: the built-in upscalers, and PNG info.

Face restoration (GFPGAN, CodeFormer) and model upscalers (ESRGAN...) are not here; asking for them is a 422
naming the field.
"""

from __future__ import annotations

from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from distributed.images import png_to_base64
from distributed.infotext import parse_infotext
from distributed.worker.imageops import UPSCALERS, upscale
from distributed.worker.requests_check import RequestFieldError, decode_field


class ExtrasRequest(BaseModel):
    """POST /sdapi/v1/extra-single-image, A1111 1.10.1's field names and defaults."""

    model_config = ConfigDict(extra="ignore")

    image: str = ""
    resize_mode: int = Field(0, ge=0, le=1)
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False


def upscaler_listing() -> list[dict[str, Any]]:
    """GET /sdapi/v1/upscalers, in A1111's shape."""
    return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4} for name in UPSCALERS]


def _image(text: str, field_name: str) -> Image.Image:
    if not text:
        raise RequestFieldError(field_name, "an image is required")
    return decode_field(text, field_name)


def extra_single_image(request: ExtrasRequest) -> dict[str, Any]:
    """Upscale one picture as A1111's postprocessing "upscale" step does (by a factor, or to a size and crop)."""
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(request, name):
            raise RequestFieldError(name, "face restoration is not available on the headless worker")
    if request.upscaler_1 not in UPSCALERS:
        raise RequestFieldError("upscaler_1", f"{request.upscaler_1!r} is not available; this worker has {UPSCALERS}")
    if request.extras_upscaler_2_visibility and request.upscaler_2 != "None":
        raise RequestFieldError("upscaler_2", "a second upscaler is not available on the headless worker")
    image = _image(request.image, "image").convert("RGB")
    width, height = request.upscaling_resize_w, request.upscaling_resize_h
    scale = max(width / image.width, height / image.height) if request.resize_mode == 1 else request.upscaling_resize
    if max(image.width, image.height) * scale > 8192:
        raise RequestFieldError("upscaling_resize", f"{scale}x of {image.width}x{image.height} is over 8192 pixels")
    result = upscale(image, scale, request.upscaler_1)
    if request.resize_mode == 1 and request.upscaling_crop:
        cropped = Image.new("RGB", (width, height))
        cropped.paste(result, box=(width // 2 - result.width // 2, height // 2 - result.height // 2))
        result = cropped
    encoded = png_to_base64(result, None) if request.show_extras_results else None
    return {"html_info": "", "image": encoded}


def png_info(image_text: str) -> dict[str, Any]:
    """POST /sdapi/v1/png-info: the infotext a picture carries, and its parsed fields."""
    image = _image(image_text, "image")
    items = {k: v for k, v in image.info.items() if isinstance(v, str)}
    text = items.pop("parameters", "")
    parameters: dict[str, Any] = {}
    if text:
        prompt, negative, fields = parse_infotext(text)
        parameters = {"Prompt": prompt, "Negative prompt": negative, **fields}
    return {"info": text, "items": items, "parameters": parameters}
