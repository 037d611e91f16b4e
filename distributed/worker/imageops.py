"""Picture operations around img2img and hires fix, done the way A1111 1.10.1 does them (same PIL and OpenCV
calls in the same order), so a worker's input to the model and its pasted-back output equal an A1111's.

Covers: resize modes 0-2 with the built-in upscalers (None, Lanczos, Nearest), binary masks, mask blur, "only
masked" inpainting (crop region, expansion to the render's aspect ratio, paste back), the "fill" masked content and
the overlay of the original over what was not inpainted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# A1111's built-in pixel upscalers; the names a hires fix or img2img request may use here
UPSCALERS = ("None", "Lanczos", "Nearest")
LANCZOS = Image.Resampling.LANCZOS


def upscale(image: Image.Image, scale: float, name: str) -> Image.Image:
    """A1111's Upscaler.upscale for the built-in scalers: up to three passes, then exact size by Lanczos ("None"
    makes no pass of its own)."""
    dest_w = int((image.width * scale) // 8 * 8)
    dest_h = int((image.height * scale) // 8 * 8)
    resample = Image.Resampling.NEAREST if name == "Nearest" else LANCZOS
    for attempt in range(3):
        if image.width >= dest_w and image.height >= dest_h and (attempt > 0 or scale != 1):
            break
        shape = image.size
        if name == "None":
            break
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)
        if shape == image.size:
            break
    if image.size != (dest_w, dest_h):
        image = image.resize((int(dest_w), int(dest_h)), resample=LANCZOS)
    return image


def _resize(image: Image.Image, width: int, height: int, upscaler: str | None) -> Image.Image:
    if upscaler is None or upscaler == "None" or image.mode == "L":
        return image.resize((width, height), resample=LANCZOS)
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        image = upscale(image, scale, upscaler)
    if image.size != (width, height):
        image = image.resize((width, height), resample=LANCZOS)
    return image


def resize_image(mode: int, image: Image.Image, width: int, height: int, upscaler: str | None = None) -> Image.Image:
    """A1111's images.resize_image: 0 just resize, 1 crop and resize, 2 (and 3, as A1111 does) resize and fill."""
    if mode == 0:
        return _resize(image, width, height, upscaler)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
    else:
        src_w = width if ratio < src_ratio else image.width * height // image.height
        src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = _resize(image, src_w, src_h, upscaler)
    result = Image.new("RGB", (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode != 1 and ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            result.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            bottom = resized.resize((width, fill_height), box=(0, resized.height, width, resized.height))
            result.paste(bottom, box=(0, fill_height + src_h))
    elif mode != 1 and ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            result.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            right = resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height))
            result.paste(right, box=(fill_width + src_w, 0))
    return result


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, background)
        canvas.paste(image, mask=image)
        image = canvas
    return image.convert("RGB")


def binary_mask(image: Image.Image, round_alpha: bool = True) -> Image.Image:
    """A1111's create_binary_mask: a transparent RGBA mask is its alpha, else the picture in grey."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda v: 255 if v > 128 else 0) if round_alpha else alpha
    return image.convert("L")


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """OpenCV Gaussian blur along x, then along y, with A1111's kernel sizes."""
    import cv2

    if blur_x > 0:
        size = 2 * int(2.5 * blur_x + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (size, 1), blur_x))
    if blur_y > 0:
        size = 2 * int(2.5 * blur_y + 0.5) + 1
        mask = Image.fromarray(cv2.GaussianBlur(np.array(mask), (1, size), blur_y))
    return mask


Box = tuple[int, int, int, int]


def crop_region(mask: Image.Image, pad: int) -> Box | None:
    """The box around everything masked, padded; None for an empty mask."""
    box = mask.getbbox()
    if not box:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)) if pad else box


def _expand_axis(low: int, high: int, desired: float, limit: int) -> tuple[int, int]:
    diff = int(desired - (high - low))
    low -= diff // 2
    high += diff - diff // 2
    if high >= limit:
        low, high = low - (high - limit), limit
    if low < 0:
        high, low = high - low, 0
    return low, min(high, limit)


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """Grow the box to the render's aspect ratio, staying inside the picture (A1111's expand_crop_region)."""
    x1, y1, x2, y2 = box
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _expand_axis(y1, y2, (x2 - x1) / (width / height), image_height)
    else:
        x1, x2 = _expand_axis(x1, x2, (y2 - y1) * (width / height), image_width)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the unmasked colours blurred into the masked area, coarse to fine."""
    result = Image.new("RGBA", image.size)
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    masked = masked.convert("RGBa")
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def overlay_of(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original where it was not inpainted, transparent elsewhere."""
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return masked.convert("RGBA")


def apply_overlay(image: Image.Image, paste_to: Box | None, overlay: Image.Image | None) -> Image.Image:
    """Put a rendered crop back where it came from, then the original over what was not inpainted."""
    if overlay is None:
        return image
    if paste_to is not None:
        x, y, w, h = paste_to
        canvas = Image.new("RGBA", overlay.size)
        canvas.paste(resize_image(1, image, w, h), (x, y))
        image = canvas
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")


@dataclass
class PreparedInputs:
    """img2img inputs as A1111's StableDiffusionProcessingImg2Img.init leaves them."""

    images: list[Image.Image]  # what the VAE encodes, width x height (or native size for resize mode 3)
    latent_mask: Image.Image | None  # white = repaint, render-sized
    overlays: list[Image.Image] | None
    paste_to: Box | None  # where an "only masked" render goes back into the original


def prepare_img2img(
    init_images: list[Image.Image],
    mask: Image.Image | None,
    *,
    width: int,
    height: int,
    resize_mode: int,
    mask_round: bool,
    invert: bool,
    blur: tuple[int, int],
    full_res: bool,
    padding: int,
    inpainting_fill: int,
) -> PreparedInputs:
    crop: Box | None = None
    paste_to: Box | None = None
    image_mask: Image.Image | None = None
    mask_for_overlay: Image.Image | None = None
    if mask is not None:
        image_mask = binary_mask(mask, mask_round)
        if invert:
            image_mask = ImageOps.invert(image_mask)
        image_mask = blur_mask(image_mask, *blur)
        if full_res:
            mask_for_overlay = image_mask
            grey = image_mask.convert("L")
            crop = crop_region(grey, padding)
            if crop is not None:
                crop = expand_crop_region(crop, width, height, grey.width, grey.height)
                x1, y1, x2, y2 = crop
                image_mask = resize_image(2, grey.crop(crop), width, height)
                paste_to = (x1, y1, x2 - x1, y2 - y1)
            else:
                image_mask = mask_for_overlay = None
        else:
            image_mask = resize_image(resize_mode, image_mask, width, height)
            doubled = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
            mask_for_overlay = Image.fromarray(doubled)
    images: list[Image.Image] = []
    overlays: list[Image.Image] = []
    for original in init_images:
        image = flatten(original)
        if crop is None and resize_mode != 3:
            image = resize_image(resize_mode, image, width, height)
        if image_mask is not None and mask_for_overlay is not None:
            if mask_for_overlay.size != image.size:
                mask_for_overlay = resize_image(resize_mode, mask_for_overlay, image.width, image.height)
            overlays.append(overlay_of(image, mask_for_overlay))
        if crop is not None:
            image = resize_image(2, image.crop(crop), width, height)
        if image_mask is not None and inpainting_fill != 1:
            image = fill(image, image_mask)
        images.append(image)
    return PreparedInputs(images, image_mask, overlays if image_mask is not None else None, paste_to)
