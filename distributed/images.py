"""PNG images as the webui API carries them: base64 text, with the infotext in the `parameters` chunk."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, ImageDraw, PngImagePlugin

# Decoding refuses anything larger: a hostile or broken peer must not make us allocate gigabytes.
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageDecodeError(ValueError):
    """Text that is not a base64 image, or an image over the size limit."""


def encode_png(image: Image.Image, infotext: str | None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_to_base64(image: Image.Image, infotext: str | None) -> str:
    return base64.b64encode(encode_png(image, infotext)).decode("ascii")


def decode_base64_image(text: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode base64 (optionally a data: URL, as A1111 accepts) into a loaded PIL image."""
    if text.startswith("data:image/"):
        text = text.split(";", 1)[1].split(",", 1)[-1]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"not valid base64: {exc}") from exc
    return decode_image_bytes(raw, max_pixels)


def decode_image_bytes(raw: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file's bytes, refusing more than `max_pixels` before the pixels are read."""
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(f"image is {width}x{height}, over the limit of {max_pixels} pixels")
        image.load()
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageDecodeError(f"not a readable image: {exc}") from exc
    return image


def png_parameters(image: Image.Image) -> str | None:
    """The infotext stored in a PNG's `parameters` chunk, if any."""
    value = image.info.get("parameters")
    return value if isinstance(value, str) else None


def contact_sheet(
    images: list[Image.Image], columns: int = 6, scale: int = 2, gap: int = 4, labels: list[str] | None = None
) -> Image.Image:
    """All images in a grid, in index order, each enlarged `scale` times (nearest neighbour keeps pixels honest),
    with its label (index, seed, worker) under it when given."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    width = max(image.width for image in images) * scale
    height = max(image.height for image in images) * scale
    caption = 28 if labels else 0
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (width + gap) + gap, rows * (height + caption + gap) + gap), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        left, top = gap + column * (width + gap), gap + row * (height + caption + gap)
        enlarged = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        sheet.paste(enlarged, (left, top))
        if labels and index < len(labels):
            for line_number, line in enumerate(labels[index].split("\n")[:2]):
                draw.text((left + 2, top + height + 2 + 12 * line_number), line, fill=(230, 230, 230))
    return sheet
