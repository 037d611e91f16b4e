"""Per-image noise exactly as A1111 1.10.1 draws it (modules/rng.py), for each of its three sources.

Image i of a batch has its own generator seeded with its own seed, so it equals a single-image run with that seed:
the first draw is the initial noise (mixed with the variation seed's noise by slerp), later draws are the sampler's
ancestral noise. With an eta noise seed delta (ENSD) the later draws come from a generator seeded with seed + ENSD.

Sources (A1111's `randn_source` option): "GPU" draws with a generator on the worker's device (on a CPU worker that
is the CPU generator, as A1111 on a CPU does), "CPU" always on the CPU, "NV" from a Philox 4x32-10 counter generator
with Box-Muller, the numbers torch.randn gives on an NVIDIA GPU, computed here on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

RANDN_SOURCES = ("GPU", "CPU", "NV")

_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_INV_2_32 = np.array([2.3283064e-10], dtype=np.float32)
_INV_2_32_2PI = np.array([2.3283064e-10 * 6.2831855], dtype=np.float32)


class Draws(Protocol):
    def randn(self, shape: tuple[int, ...]) -> torch.Tensor: ...


class PhiloxDraws:
    """The NV source: counter (offset, 0, index, 0), key = seed, ten Philox rounds, one Box-Muller value per number."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.offset = 0

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = int(np.prod(shape))
        c0 = np.full(count, self.offset, dtype=np.uint32)
        c1 = np.zeros(count, dtype=np.uint32)
        c2 = np.arange(count, dtype=np.uint32)
        c3 = np.zeros(count, dtype=np.uint32)
        self.offset += 1
        seed = np.uint64(self.seed % 2**64)
        k0 = np.full(count, np.uint32(int(seed) & 0xFFFFFFFF), dtype=np.uint32)
        k1 = np.full(count, np.uint32(int(seed) >> 32), dtype=np.uint32)
        for round_index in range(10):
            if round_index:
                k0 = k0 + _PHILOX_W[0]
                k1 = k1 + _PHILOX_W[1]
            p0 = c0.astype(np.uint64) * _PHILOX_M[0]
            p2 = c2.astype(np.uint64) * _PHILOX_M[1]
            hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
            hi2, lo2 = (p2 >> np.uint64(32)).astype(np.uint32), p2.astype(np.uint32)
            c0, c1, c2, c3 = hi2 ^ c1 ^ k0, lo2, hi0 ^ c3 ^ k1, lo0
        u = c0 * _INV_2_32 + _INV_2_32 / 2
        v = c1 * _INV_2_32_2PI + _INV_2_32_2PI / 2
        values = (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)
        return torch.from_numpy(values.reshape(shape))


class TorchDraws:
    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device).manual_seed(int(seed))
        self.device = device

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)


def make_draws(seed: int, source: str, device: torch.device) -> Draws:
    if source == "NV":
        return PhiloxDraws(seed)
    if source == "CPU" or device.type == "mps":
        return TorchDraws(seed, torch.device("cpu"))
    return TorchDraws(seed, device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's variation-seed slerp: norms along dim 1, linear when the two are nearly parallel."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageNoise:
    """The noise of one batch: `first()` is the initial noise, every `next()` one more draw per image."""

    def __init__(
        self,
        shape: tuple[int, ...],
        seeds: Sequence[int],
        subseeds: Sequence[int] | None = None,
        subseed_strength: float = 0.0,
        *,
        source: str = "GPU",
        device: torch.device | None = None,
        ensd: int = 0,
    ) -> None:
        if source not in RANDN_SOURCES:
            raise ValueError(f"randn_source must be one of {', '.join(RANDN_SOURCES)}, got {source!r}")
        self.shape = shape
        self.seeds = list(seeds)
        self.subseeds = list(subseeds) if subseeds is not None else None
        self.subseed_strength = subseed_strength
        self.source = source
        self.device = device or torch.device("cpu")
        self.ensd = ensd
        self._draws = [make_draws(seed, source, self.device) for seed in self.seeds]
        self._first_done = False

    def first(self) -> torch.Tensor:
        noises = []
        for index, draws in enumerate(self._draws):
            noise = draws.randn(self.shape).to(self.device)
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[index] if index < len(self.subseeds) else 0
                subnoise = make_draws(subseed, self.source, self.device).randn(self.shape).to(self.device)
                noise = slerp(self.subseed_strength, noise, subnoise)
            noises.append(noise)
        if self.ensd:
            self._draws = [make_draws(seed + self.ensd, self.source, self.device) for seed in self.seeds]
        self._first_done = True
        return torch.stack(noises)

    def next(self) -> torch.Tensor:
        if not self._first_done:
            return self.first()
        return torch.stack([draws.randn(self.shape).to(self.device) for draws in self._draws])
