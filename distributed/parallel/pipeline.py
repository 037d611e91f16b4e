"""`StableDiffusionParallelPipeline`: a diffusers pipeline whose UNet runs the two guidance branches on two lanes.

    pipe = StableDiffusionParallelPipeline.from_pretrained(path, devices=["cuda:0", "cuda:1"])
    image = pipe("a lighthouse at dusk", num_inference_steps=20).images[0]

Lanes are two devices of this process (`devices=["cpu", "cpu"]` works too: two threads), or the first device and a peer
worker (`peer="HOST:PORT"`, the shared secret from DISTRIBUTED_CFG_SECRET). Any diffusers pipeline that calls its
UNet with a guidance batch works the same (SDXL's extra conditioning is split with it); everything else is diffusers'.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch

from distributed.parallel.frames import SECRET_ENV
from distributed.parallel.peer import PeerLane
from distributed.parallel.split import DeviceLane, Lane, SplitUNet


def second_lane(unet: torch.nn.Module, devices: Sequence[str], peer: str | None, secret: bytes | None) -> Lane | None:
    """The lane for the second guidance branch: the second device, or the peer (None: one lane)."""
    if len(devices) > 2:
        raise ValueError(f"the CFG split uses two lanes; {len(devices)} devices given")
    if len(devices) == 2 and peer:
        raise ValueError("give two devices or one device and a peer, not both")
    if len(devices) == 2:
        first, other = torch.device(devices[0]), torch.device(devices[1])
        return DeviceLane(unet if other == first else copy.deepcopy(unet).to(other), devices[1])
    if peer:
        key = secret if secret is not None else os.environ.get(SECRET_ENV, "").encode()
        return PeerLane(peer, key, unet)
    return None


class StableDiffusionParallelPipeline:
    def __init__(self, pipe: Any, unet: SplitUNet) -> None:
        self.pipe = pipe
        self.split = unet

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        devices: Sequence[str] = ("cpu",),
        peer: str | None = None,
        secret: bytes | None = None,
        **kwargs: Any,
    ) -> StableDiffusionParallelPipeline:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(path, **kwargs).to(devices[0])
        return cls.from_pipe(pipe, devices, peer, secret)

    @classmethod
    def from_pipe(
        cls, pipe: Any, devices: Sequence[str] = ("cpu",), peer: str | None = None, secret: bytes | None = None
    ) -> StableDiffusionParallelPipeline:
        """An already loaded diffusers pipeline, its UNet split across the lanes."""
        unet = pipe.unet
        split = SplitUNet(unet, second_lane(unet, devices, peer, secret))
        pipe.unet = split
        return cls(pipe, split)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def close(self) -> None:
        self.split.close()
