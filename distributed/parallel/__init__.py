"""One image faster: the two halves of classifier-free guidance on two lanes (two devices, or a peer worker).

`split` holds the UNet stand-in, `frames` the step channel's wire format and handshake, `peer` both ends of a peer
lane, `pipeline` the diffusers-compatible `StableDiffusionParallelPipeline`. Needs torch and diffusers, not the webui.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StableDiffusionParallelPipeline"]


def __getattr__(name: str) -> Any:
    if name == "StableDiffusionParallelPipeline":
        from distributed.parallel.pipeline import StableDiffusionParallelPipeline

        return StableDiffusionParallelPipeline
    raise AttributeError(name)
