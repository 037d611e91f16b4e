"""The CFG split: a UNet stand-in that runs the unconditional and conditional halves of each guidance batch on two
lanes at once and joins them on the first.

A sampler with classifier-free guidance calls the UNet with a batch of [uncond x B, cond x B]. `SplitUNet` sends the
second half to the second lane (another device of this process, in a thread of its own, or a peer worker over the step
channel) while the first half runs here, and concatenates the two. Each half is one UNet call of batch B, so the
result is byte-identical to running the two halves one after the other on one device at the same thread count. If the
second lane fails (the peer dies, misses its deadline or breaks the format), this and every later step of the job run
both halves here, one after the other: the same image, nothing lost. Odd batches (no guidance) are not split.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from distributed.parallel.frames import ChannelError

logger = logging.getLogger(__name__)

Half = tuple[torch.Tensor, Any, torch.Tensor, dict[str, Any]]  # sample, timestep, context, other UNet arguments


class Lane(Protocol):
    label: str  # said in the infotext: the device or the peer's address

    def run(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        """The UNet's noise prediction for this half (blocking), on the caller's device."""
        ...

    def close(self) -> None: ...


def _mode_of_caller() -> Callable[[], Any]:
    """The calling thread's autograd mode, to enter in the lane's thread (torch keeps it per thread)."""
    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()
    return lambda: torch.inference_mode() if inference else torch.set_grad_enabled(grad)


class DeviceLane:
    """A device of this process: its own copy of the UNet (the same module when it is the first lane's device)."""

    def __init__(self, unet: torch.nn.Module, device: str) -> None:
        self.unet = unet
        self.device = torch.device(device)
        self.label = device

    def run(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        back = sample.device
        moved = {key: _to(value, self.device) for key, value in extra.items()}
        out = self.unet(sample.to(self.device), _to(timestep, self.device), context.to(self.device), **moved)
        return (out.sample if hasattr(out, "sample") else out[0]).to(back)

    def close(self) -> None:
        return None


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(item, device) for item in value)
    return value


def _halves(value: Any, batch: int) -> tuple[Any, Any]:
    """Split every tensor with the guidance batch as its first dimension; leave the rest to both halves."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[: batch // 2], value[batch // 2 :]
    if isinstance(value, dict):
        pairs = {key: _halves(item, batch) for key, item in value.items()}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    if isinstance(value, (list, tuple)):
        pairs_list = [_halves(item, batch) for item in value]
        return type(value)(p[0] for p in pairs_list), type(value)(p[1] for p in pairs_list)
    return value, value


@dataclass
class SplitStats:
    split_steps: int = 0  # UNet calls run on two lanes
    local_steps: int = 0  # calls run here alone (odd batch, split off, or after the second lane failed)
    fell_back: str | None = None  # why the second lane was dropped
    lanes: list[str] = field(default_factory=list)


class SplitUNet(torch.nn.Module):  # type: ignore[misc]
    """Stands in for a diffusers UNet2DConditionModel (its config, dtype and device are the wrapped model's)."""

    def __init__(self, unet: torch.nn.Module, second: Lane | None, deadline_s: float = 60.0) -> None:
        super().__init__()
        self.unet = unet
        self.second = second
        self.enabled = second is not None
        self.deadline_s = deadline_s
        self.stats = SplitStats(lanes=[str(self.device), second.label] if second else [str(self.device)])
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfg-lane")
        self._lock = threading.Lock()

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def reset_stats(self) -> SplitStats:
        """This job's account, and a fresh one for the next (the second lane is tried again)."""
        with self._lock:
            done, self.stats = self.stats, SplitStats(lanes=list(self.stats.lanes))
            return done

    def _local(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        out = self.unet(sample, timestep, encoder_hidden_states=context, **extra)
        result: torch.Tensor = out.sample if hasattr(out, "sample") else out[0]
        return result

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        batch = sample.shape[0]
        second = self.second if self.enabled else None
        if batch % 2 or not self.enabled:
            self.stats.local_steps += 1
            result = self._local(sample, timestep, encoder_hidden_states, kwargs)
        elif second is None:  # the second lane failed: both halves here, one after the other (the same calls)
            self.stats.local_steps += 1
            halves = zip(*(_halves(v, batch) for v in (sample, timestep, encoder_hidden_states, kwargs)), strict=True)
            result = torch.cat([self._local(*half) for half in halves])
        else:
            result = self._split(second, sample, timestep, encoder_hidden_states, kwargs)
        return _output(result, return_dict)

    def _split(
        self, second: Lane, sample: torch.Tensor, timestep: Any, context: torch.Tensor, extra: dict[str, Any]
    ) -> torch.Tensor:
        batch = sample.shape[0]
        first_half, second_half = zip(*(_halves(v, batch) for v in (sample, timestep, context, extra)), strict=True)
        mode = _mode_of_caller()

        def other() -> torch.Tensor:
            with mode():
                return second.run(*second_half)

        future = self._pool.submit(other)
        mine = self._local(*first_half)
        try:
            theirs = future.result(timeout=self.deadline_s)
            self.stats.split_steps += 1
        except (ChannelError, FutureTimeout, RuntimeError) as error:
            reason = f"{second.label}: {error}" if str(error) else f"{second.label}: no answer in {self.deadline_s} s"
            logger.warning("the CFG split's second lane failed (%s); finishing here with both halves", reason)
            self.stats.fell_back = reason
            self.second = None
            second.close()
            self.stats.local_steps += 1
            theirs = self._local(*second_half)
        return torch.cat([mine, theirs])

    def close(self) -> None:
        if self.second is not None:
            self.second.close()
        self._pool.shutdown(wait=False)


def _output(sample: torch.Tensor, return_dict: bool) -> Any:
    if not return_dict:
        return (sample,)
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    return UNet2DConditionOutput(sample=sample)


def reference_split(unet: torch.nn.Module) -> Callable[..., Any]:
    """The same split on one lane, one half after the other: what a fused image must equal byte for byte."""

    def call(sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any) -> Any:
        return_dict = kwargs.pop("return_dict", True)
        batch = sample.shape[0]
        if batch % 2:
            return unet(
                sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict, **kwargs
            )
        halves = zip(*(_halves(v, batch) for v in (sample, timestep, encoder_hidden_states, kwargs)), strict=True)
        parts = []
        for part_sample, part_t, part_context, part_extra in halves:
            out = unet(part_sample, part_t, encoder_hidden_states=part_context, **part_extra)
            parts.append(out.sample if hasattr(out, "sample") else out[0])
        return _output(torch.cat(parts), return_dict)

    return call
