"""Hires fix: A1111 1.10.1's second pass over a txt2img result (processing.sample_hr_pass).

The first pass's latents are enlarged, either in latent space (the "Latent" upscalers: torch interpolation) or as
pictures (decoded to bytes, resized by a pixel upscaler, encoded again); then an img2img pass of exactly the
requested number of steps runs at the new size, with fresh per-image noise from the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from distributed.worker.imageops import UPSCALERS
from distributed.worker.samplers import SamplerChoice

# A1111's shared.latent_upscale_modes: name -> (torch interpolation mode, antialias)
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
HIRES_UPSCALERS = (*LATENT_UPSCALERS, *UPSCALERS)


@dataclass(frozen=True)
class HiresSpec:
    width: int  # A1111's hr_upscale_to_x/y: the size the first pass is enlarged to
    height: int
    truncate_x: int  # latent columns/rows cut off to reach hr_resize_x/y exactly
    truncate_y: int
    upscaler: str
    steps: int  # hr_second_pass_steps, or the first pass's steps
    denoising_strength: float
    sampler: SamplerChoice
    prompts: list[str]
    negative_prompts: list[str]

    @property
    def final_size(self) -> tuple[int, int]:
        return self.width - self.truncate_x * 8, self.height - self.truncate_y * 8


def target_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> tuple[int, int, int, int]:
    """A1111's calculate_target_resolution: (upscale to x, upscale to y, truncate x, truncate y)."""
    if resize_x == 0 and resize_y == 0:
        return int(width * scale), int(height * scale), 0, 0
    if resize_y == 0:
        return resize_x, resize_x * height // width, 0, 0
    if resize_x == 0:
        return resize_y * width // height, resize_y, 0, 0
    if width / height < resize_x / resize_y:
        to_x, to_y = resize_x, resize_x * height // width
    else:
        to_x, to_y = resize_y * width // height, resize_y
    return to_x, to_y, (to_x - resize_x) // 8, (to_y - resize_y) // 8
