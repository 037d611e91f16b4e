from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from distributed.images import ImageDecodeError, decode_base64_image, png_parameters, png_to_base64
from distributed.worker.app import parse_api_auth


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


def test_api_auth_parsing() -> None:
    assert parse_api_auth("a:b,c:d:e") == {"a": "b", "c": "d:e"}
    assert parse_api_auth(None) == {}
    with pytest.raises(ValueError, match="user:password"):
        parse_api_auth("nocolon")
