"""The worker's CFG lanes: `--devices A,B` or `--cfg-peer HOST:PORT` give each UNet call a second lane.

Every guidance batch of a chunk is split: the unconditional half on the first lane, the conditional half on the second
(a chunk of B images is B images per lane, as splitting the batch by image would be). With `--cfg-parallel auto` the
worker times both ways once per latent size and batch, on dummy inputs before the image starts, and splits only where
that is faster, so it is never slower than one lane; `on` always splits, `off` never. `--cfg-listen PORT` makes this
worker a peer lane for another.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from distributed.parallel.frames import SECRET_ENV, ChannelError
from distributed.parallel.peer import PeerServer
from distributed.parallel.pipeline import second_lane
from distributed.parallel.split import SplitStats, SplitUNet
from distributed.worker.components import Components

logger = logging.getLogger(__name__)
MODES = ("auto", "on", "off")
TOKENS = 77  # a CLIP context's length, for the timing's dummy inputs


@dataclass
class LaneSettings:
    devices: list[str]
    peer: str | None = None  # HOST:PORT of a worker started with --cfg-listen
    mode: str = "auto"
    listen: int | None = None  # serve as a peer lane on this port
    listen_host: str = "127.0.0.1"

    @property
    def secret(self) -> bytes:
        return os.environ.get(SECRET_ENV, "").encode()

    @property
    def two_lanes(self) -> bool:
        return self.mode != "off" and (len(self.devices) == 2 or self.peer is not None)


@dataclass
class LaneUse:
    """What one render did with the lanes, for its infotext and info."""

    split: SplitUNet | None
    stats: SplitStats = field(default_factory=SplitStats)

    @property
    def label(self) -> str | None:
        """The infotext's "CFG split" value, when any step ran on two lanes."""
        if self.stats.split_steps == 0:
            return None
        text = " + ".join(self.stats.lanes)
        return f"{text} (fell back: {self.stats.fell_back})" if self.stats.fell_back else text


class CfgLanes:
    def __init__(self, settings: LaneSettings) -> None:
        self.settings = settings
        self._splits: dict[int, SplitUNet] = {}  # by the wrapped UNet's id (one per loaded checkpoint)
        self._faster: dict[tuple[int, tuple[int, ...]], bool] = {}  # (unet, guidance batch shape) -> split is faster
        self.server: PeerServer | None = None
        self.speedups: dict[str, float] = {}  # "BxCxHxW" -> one lane's step time over the split's, as measured

    def listen(self, components: Components) -> None:
        if self.settings.listen is None:
            return
        if not self.settings.secret:
            raise SystemExit(f"--cfg-listen needs the shared secret in {SECRET_ENV}")
        host, port = self.settings.listen_host, self.settings.listen
        self.server = PeerServer(components.unet, host, port, self.settings.secret).start()

    def prepare(self, components: Components, batch: int, height: int, width: int) -> LaneUse:
        """The UNet this render uses: the split one when two lanes are set and (in auto) faster at this size."""
        if not self.settings.two_lanes:
            return LaneUse(None)
        split = self._split_for(components)
        if split is None:
            return LaneUse(None)
        factor = components.vae_scale_factor
        shape = (2 * batch, int(components.unet.config.in_channels), height // factor, width // factor)
        key = (id(components.unet), shape)
        if self.settings.mode == "auto" and key not in self._faster:
            self._faster[key] = self._time(components, split, shape)
        split.enabled = self.settings.mode == "on" or self._faster.get(key, True)
        split.reset_stats()
        return LaneUse(split)

    def finish(self, use: LaneUse) -> LaneUse:
        if use.split is not None:
            use.stats = use.split.reset_stats()
            if use.split.second is None:  # the peer failed: try it again for the next render
                self._splits.pop(id(use.split.unet), None)
                use.split.close()
        return use

    def _split_for(self, components: Components) -> SplitUNet | None:
        unet = components.unet
        split = self._splits.get(id(unet))
        if split is not None:
            return split
        try:
            devices = self.settings.devices
            lane = second_lane(
                unet, devices if len(devices) == 2 else devices[:1], self.settings.peer, self.settings.secret
            )
        except ChannelError as error:
            logger.warning("CFG split unavailable, rendering on one lane: %s", error)
            return None
        split = SplitUNet(unet, lane)
        self._splits[id(unet)] = split
        return split

    def _time(self, components: Components, split: SplitUNet, shape: tuple[int, ...]) -> bool:
        """One lane against two on dummy inputs of this shape (a warm-up call each, then one timed)."""
        unet = components.unet
        width = int(unet.config.cross_attention_dim)
        sample = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(components.device, components.dtype)
        context = torch.zeros((shape[0], TOKENS, width), device=components.device, dtype=components.dtype)
        timestep = torch.tensor(500.0)
        split.enabled = True

        def timed(call: Any) -> float:
            with torch.inference_mode():
                call(sample, timestep, context)
                started = time.perf_counter()
                call(sample, timestep, context)
                return time.perf_counter() - started

        one = timed(lambda s, t, c: unet(s, t, encoder_hidden_states=c))
        two = timed(lambda s, t, c: split(s, t, encoder_hidden_states=c))
        split.reset_stats()
        label = "x".join(map(str, shape))
        self.speedups[label] = round(one / two, 3)
        logger.info("CFG split at %s: one lane %.1f ms, two lanes %.1f ms per step", label, one * 1000, two * 1000)
        return two < one

    def describe(self) -> dict[str, Any]:
        """For GET /distributed/v1/lanes: what the planner and people read."""
        return {
            "devices": self.settings.devices,
            "peer": self.settings.peer,
            "cfg_parallel": self.settings.mode,
            "listening": self.server.port if self.server else None,
            "speedups": dict(self.speedups),
        }

    def close(self) -> None:
        for split in self._splits.values():
            split.close()
        if self.server is not None:
            self.server.close()
