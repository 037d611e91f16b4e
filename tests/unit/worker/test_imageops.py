"""img2img input preparation and hires sizes, checked against A1111 1.10.1's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from distributed.worker.hires import target_size
from distributed.worker.imageops import (
    apply_overlay,
    blur_mask,
    crop_region,
    expand_crop_region,
    fill,
    prepare_img2img,
    resize_image,
)


def _picture(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    array = np.stack([np.add.outer(y, x) / 2, np.add.outer(y, x[::-1]) / 2, np.full((height, width), 90.0)], 2)
    return Image.fromarray(array.astype(np.uint8))


def test_crop_region_is_padded_and_expanded_to_the_render_ratio() -> None:
    mask = Image.new("L", (100, 80), 0)
    mask.paste(255, (40, 30, 50, 40))
    assert crop_region(mask, 0) == (40, 30, 50, 40)
    assert crop_region(mask, 5) == (35, 25, 55, 45)
    assert crop_region(Image.new("L", (10, 10), 0), 4) is None
    # a 20x20 box rendered at 64x32 grows to 40x20, centred; at the picture's edge it shifts inside
    assert expand_crop_region((35, 25, 55, 45), 64, 32, 100, 80) == (25, 25, 65, 45)
    assert expand_crop_region((0, 25, 20, 45), 64, 32, 100, 80) == (0, 25, 40, 45)


def test_resize_modes_keep_the_requested_size() -> None:
    wide = _picture(96, 48)
    for mode in (0, 1, 2, 3):
        assert resize_image(mode, wide, 64, 64).size == (64, 64)
    cropped = np.asarray(resize_image(1, wide, 64, 64))
    filled = np.asarray(resize_image(2, wide, 64, 64))
    assert not np.array_equal(cropped, filled)
    # resize and fill: the middle band is the whole picture scaled to 64 wide (32 high)
    assert np.array_equal(filled[16:48], np.asarray(wide.resize((64, 32), Image.Resampling.LANCZOS)))


def test_upscalers_for_hires() -> None:
    small = _picture(32, 32)
    nearest = np.asarray(resize_image(0, small, 64, 64, "Nearest"))
    assert np.array_equal(nearest[::2, ::2], np.asarray(small))  # pixel doubling
    assert not np.array_equal(np.asarray(resize_image(0, small, 64, 64, "Lanczos")), nearest)


def test_mask_blur_uses_a1111_kernels() -> None:
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (16, 0, 32, 32))
    blurred = np.asarray(blur_mask(mask, 4, 0))
    assert blurred[0, 0] == 0 and blurred[0, 31] == 255 and 0 < blurred[0, 15] < 255
    assert np.array_equal(blurred[0], blurred[31])  # x only
    assert np.array_equal(np.asarray(blur_mask(mask, 0, 0)), np.asarray(mask))


def test_fill_paints_only_from_the_unmasked_colours() -> None:
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    image.paste((0, 0, 255), (0, 0, 16, 32))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))
    filled = np.asarray(fill(image, mask))
    assert filled[:, :16, 2].max() < 60  # the masked blue is gone, painted with the red around it
    assert filled[:, 16:, 0].min() > 150


def test_only_masked_inpainting_crops_and_pastes_back() -> None:
    original = _picture(96, 96)
    mask = Image.new("L", (96, 96), 0)
    mask.paste(255, (60, 60, 80, 80))
    prepared = prepare_img2img(
        [original], mask, width=64, height=64, resize_mode=0, mask_round=True, invert=False, blur=(0, 0),
        full_res=True, padding=4, inpainting_fill=1,
    )  # fmt: skip
    assert prepared.paste_to == (56, 56, 28, 28)
    assert prepared.images[0].size == (64, 64) and prepared.latent_mask is not None
    assert prepared.overlays is not None and prepared.overlays[0].size == (96, 96)
    rendered = Image.new("RGB", (64, 64), (0, 255, 0))
    result = np.asarray(apply_overlay(rendered, prepared.paste_to, prepared.overlays[0]))
    assert result.shape == (96, 96, 3)
    assert np.array_equal(result[:50], np.asarray(original)[:50])  # outside the mask: the original
    assert tuple(result[70, 70]) == (0, 255, 0)  # inside: the render


def test_whole_picture_inpainting_resizes_and_overlays() -> None:
    mask = Image.new("L", (96, 96), 0)
    mask.paste(255, (0, 0, 48, 96))
    prepared = prepare_img2img(
        [_picture(96, 96)], mask, width=64, height=64, resize_mode=0, mask_round=True, invert=True, blur=(0, 0),
        full_res=False, padding=0, inpainting_fill=1,
    )  # fmt: skip
    assert prepared.paste_to is None and prepared.images[0].size == (64, 64)
    assert prepared.latent_mask is not None
    assert np.asarray(prepared.latent_mask)[:, 60].min() == 255  # inverted: the right half is repainted


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((64, 64, 2.0, 0, 0), (128, 128, 0, 0)),
        ((64, 96, 1.5, 0, 0), (96, 144, 0, 0)),
        ((64, 96, 2.0, 128, 0), (128, 192, 0, 0)),
        ((64, 96, 2.0, 0, 128), (85, 128, 0, 0)),
        ((64, 96, 2.0, 160, 160), (160, 240, 0, 10)),
    ],
)
def test_hires_target_size(args: tuple[int, int, float, int, int], expected: tuple[int, int, int, int]) -> None:
    assert target_size(*args) == expected
