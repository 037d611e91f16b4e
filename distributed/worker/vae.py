"""The VAE side of rendering, done as A1111 does it: pixels to latents and back one image at a time, bytes by
truncation; and A1111's tiling (circular padding in every convolution of the UNet and VAE)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from distributed.worker.components import Components


class NansError(RuntimeError):
    """The model produced NaNs (A1111 raises its NansException in the same situation)."""


def encode_images(components: Components, images: list[Image.Image]) -> torch.Tensor:
    """Pixels to latents one image at a time (A1111 samples the VAE's posterior with an unseeded generator; the
    mean is used here, which is the same picture for real VAEs, whose posterior spread is negligible)."""
    latents = []
    for image in images:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array).permute(2, 0, 1)[None].to(components.device, components.dtype)
        latents.append(components.vae.encode(pixels * 2 - 1).latent_dist.mode()[0] * components.latent_scale)
    return torch.stack(latents)


def decode_images(components: Components, latents: torch.Tensor) -> list[Image.Image]:
    """One image at a time, as A1111: clamp((x + 1) / 2), times 255, truncated to bytes."""
    if not torch.isfinite(latents).all():
        raise NansError("A tensor with NaNs or infinities was produced by the UNet (try a lower CFG scale).")
    images = []
    for latent in latents:
        decoded = components.vae.decode((1.0 / components.latent_scale) * latent[None]).sample[0]
        if not torch.isfinite(decoded).all():
            raise NansError("A tensor with NaNs was produced by the VAE.")
        pixels = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
        array = (255.0 * np.moveaxis(pixels.cpu().numpy(), 0, 2)).astype(np.uint8)
        images.append(Image.fromarray(array))
    return images


@contextmanager
def tiling(components: Components, enabled: bool) -> Iterator[None]:
    """A1111's tiling: every convolution of the UNet and VAE pads circularly, so the picture tiles seamlessly."""
    layers = [m for model in (components.unet, components.vae) for m in model.modules() if type(m) is torch.nn.Conv2d]
    if not enabled:
        yield
        return
    for layer in layers:
        layer.padding_mode = "circular"
    try:
        yield
    finally:
        for layer in layers:
            layer.padding_mode = "zeros"
