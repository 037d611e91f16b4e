"""Classifier-free guidance around the UNet, arranged as A1111 1.10.1's CFGDenoiser arranges it.

One model call takes every image's prompt parts first (an `AND` prompt has several), then every image's negative
prompt, at the same noise level; when the two conditionings have different lengths (a prompt longer than 75 tokens
against a short negative prompt) the prompts and the negatives are two calls, as A1111 does without "pad conds".
The guided result is negative + (part - negative) * (weight * scale), summed over the parts.

Prompt editing (`[a:b:0.5]`) is a conditioning per range of model calls: the call counter picks the entry, like
A1111's `reconstruct_cond_batch` (the first entry whose end is at or after the call, else the first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distributed.worker.kdiffusion import DiscreteSchedule

# (latents, timesteps per row, text conditioning) -> predicted noise
UNetCall = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScheduledCond:
    """One prompt's conditioning over the model calls: (last call index it applies to, [tokens, width])."""

    entries: tuple[tuple[int, torch.Tensor], ...]

    def at(self, step: int) -> torch.Tensor:
        for end, cond in self.entries:
            if step <= end:
                return cond
        return self.entries[0][1]


@dataclass(frozen=True)
class MultiCond:
    """One image's prompt: its `AND` parts with their weights."""

    parts: tuple[tuple[ScheduledCond, float], ...]


def stack_conds(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A1111's stack_conds: rows of different lengths are filled out by repeating their last vector."""
    longest = max(t.shape[0] for t in tensors)
    return torch.stack(
        [t if t.shape[0] == longest else torch.vstack([t, t[-1:].repeat(longest - t.shape[0], 1)]) for t in tensors]
    )


@dataclass
class Blend:
    """Inpainting: where `keep` is 1 the original latent is put back (into the prediction, or into x for DDIM)."""

    init_latent: torch.Tensor
    keep: torch.Tensor  # A1111's p.mask
    repaint: torch.Tensor  # A1111's p.nmask

    def apply(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.repaint + self.init_latent * self.keep


class Guidance:
    """Builds each guided model call and combines its outputs; `inner(x_in, time_in, cond_in)` runs the model."""

    def __init__(
        self, conds: list[MultiCond], unconds: list[ScheduledCond], scale: float, s_min_uncond: float = 0.0
    ) -> None:
        self.conds = conds
        self.unconds = unconds
        self.scale = scale
        self.s_min_uncond = s_min_uncond
        self.step = 0  # model calls so far

    def __call__(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        inner: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        skip_allowed: bool = True,
    ) -> torch.Tensor:
        step = self.step
        repeats = [len(c.parts) for c in self.conds]
        weights = [[w for _, w in c.parts] for c in self.conds]
        tensor = stack_conds([part.at(step) for c in self.conds for part, _ in c.parts])
        uncond = stack_conds([u.at(step) for u in self.unconds])
        batch = x.shape[0]
        x_in = torch.cat([torch.stack([x[i]] * n) for i, n in enumerate(repeats)] + [x])
        t_in = torch.cat([torch.stack([time[i]] * n) for i, n in enumerate(repeats)] + [time])
        skip_uncond = bool(
            skip_allowed and self.step % 2 and self.s_min_uncond > 0 and float(time[0]) < self.s_min_uncond
        )
        if skip_uncond:
            x_in, t_in = x_in[:-batch], t_in[:-batch]
            out = inner(x_in, t_in, tensor)
            firsts = [sum(repeats[:i]) for i in range(batch)]
            out = torch.cat([out, torch.cat([out[i : i + 1] for i in firsts])])
        elif tensor.shape[1] == uncond.shape[1]:
            out = inner(x_in, t_in, torch.cat([tensor, uncond]))
        else:
            out = torch.zeros_like(x_in)
            rows = tensor.shape[0]
            for start in range(0, rows, batch * 2):
                end = min(start + batch * 2, rows)
                out[start:end] = inner(x_in[start:end], t_in[start:end], tensor[start:end])
            out[-batch:] = inner(x_in[-batch:], t_in[-batch:], uncond)
        self.step += 1
        scale = 1.0 if skip_uncond else self.scale
        denoised_uncond = out[-batch:]
        guided = torch.clone(denoised_uncond)
        index = 0
        for i in range(batch):
            for weight in weights[i]:
                guided[i] += (out[index] - denoised_uncond[i]) * (weight * scale)
                index += 1
        return guided


class KDenoiser:
    """k-diffusion's view of an eps-predicting CompVis model: x, sigma -> denoised, guided, blended for inpainting."""

    def __init__(
        self, unet: UNetCall, schedule: DiscreteSchedule, guidance: Guidance, blend: Blend | None = None
    ) -> None:
        self.unet = unet
        self.schedule = schedule
        self.guidance = guidance
        self.blend = blend

    def _inner(self, x_in: torch.Tensor, sigma_in: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c_out = (-sigma_in).reshape(-1, 1, 1, 1).to(x_in.device, x_in.dtype)
        c_in = (1 / (sigma_in**2 + 1.0**2) ** 0.5).reshape(-1, 1, 1, 1).to(x_in.device, x_in.dtype)
        t = self.schedule.sigma_to_t(sigma_in).to(x_in.device)
        eps = self.unet(x_in * c_in, t, cond)
        return x_in + eps * c_out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoised = self.guidance(x, sigma, self._inner)
        return self.blend.apply(denoised) if self.blend is not None else denoised


class EpsDenoiser:
    """The DDIM view: x, timestep -> guided predicted noise; inpainting blends x before the model sees it."""

    def __init__(self, unet: UNetCall, guidance: Guidance, blend: Blend | None = None) -> None:
        self.unet = unet
        self.guidance = guidance
        self.blend = blend

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.blend is not None:
            x = self.blend.apply(x)
        return self.guidance(x, timesteps, lambda x_in, t_in, cond: self.unet(x_in, t_in.to(x_in.device), cond))
