from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from distributed.images import ImageDecodeError, contact_sheet, decode_base64_image, png_parameters, png_to_base64


def test_png_round_trip_keeps_infotext() -> None:
    encoded = png_to_base64(Image.new("RGB", (8, 8), (1, 2, 3)), "a cat\nSteps: 4, Seed: 1, Size: 8x8")
    image = decode_base64_image(encoded)
    assert image.getpixel((0, 0)) == (1, 2, 3)
    assert png_parameters(image) == "a cat\nSteps: 4, Seed: 1, Size: 8x8"
    assert decode_base64_image("data:image/png;base64," + encoded).size == (8, 8)


@pytest.mark.parametrize("text", ["not base64 at all!", base64.b64encode(b"hello").decode(), ""])
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(ImageDecodeError):
        decode_base64_image(text)


def test_oversized_image_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("L", (300, 300)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_base64_image(base64.b64encode(buffer.getvalue()).decode(), max_pixels=100 * 100)


def test_contact_sheet_keeps_order_and_size() -> None:
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)]
    sheet = contact_sheet(images, columns=3, scale=2, gap=4)
    assert sheet.size == (3 * (16 + 4) + 4, 2 * (16 + 4) + 4)
    assert sheet.getpixel((4 + 20 * 1 + 1, 5)) == (40, 0, 0)
    assert sheet.getpixel((4 + 1, 4 + 20 + 1)) == (120, 0, 0)
