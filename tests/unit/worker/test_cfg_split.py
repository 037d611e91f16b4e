"""The CFG split on the tiny model: two local lanes and a peer lane give the same bytes as the same split on one lane;
the step channel refuses strangers and malformed frames; a peer that dies mid-image loses nothing."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from distributed.parallel.frames import (
    MAGIC,
    ChannelError,
    expect_control,
    expect_tensor,
    handshake,
    receive,
    send_control,
    send_tensor,
)
from distributed.parallel.peer import PeerLane, PeerServer
from distributed.parallel.split import DeviceLane, SplitUNet, reference_split
from distributed.worker.components import Components
from distributed.worker.pipeline import BatchSpec, render_batch
from distributed.worker.samplers import resolve
from distributed.worker.tiny import build_tiny_components

SECRET = b"a shared secret for tests"


@pytest.fixture(scope="module")
def tiny() -> Components:
    torch.set_num_threads(1)  # output bytes depend on the thread count
    return build_tiny_components()


class Reference(torch.nn.Module):
    """The same split on one lane: two batch-1 UNet calls, one after the other."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.inner = unet
        self.call = reference_split(unet)

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)


def render(components: Components, unet: torch.nn.Module | None = None, size: int = 128, steps: int = 6) -> np.ndarray:
    spec = BatchSpec(["a red house"], ["blurry"], [42], [42], 0.0, size, size, steps, 7.0, resolve("Euler a", None))
    chosen = components if unet is None else replace(components, unet=unet)
    return np.asarray(render_batch(chosen, spec, lambda done, total: False)[0]).astype(int)


def test_two_local_lanes_equal_the_same_split_on_one_lane(tiny: Components) -> None:
    split = SplitUNet(tiny.unet, DeviceLane(tiny.unet, "cpu"))
    fused = render(tiny, split)
    assert split.stats.split_steps == 6 and split.stats.local_steps == 0
    assert (fused == render(tiny, Reference(tiny.unet))).all()  # byte-identical
    assert np.abs(fused - render(tiny)).max() <= 1  # within 1/255 of the stock batch-2 call


@pytest.fixture
def peer(tiny: Components) -> Iterator[PeerServer]:
    server = PeerServer(tiny.unet, "127.0.0.1", 0, SECRET).start()
    yield server
    server.close()


def test_a_peer_lane_equals_the_same_split_on_one_lane(tiny: Components, peer: PeerServer) -> None:
    split = SplitUNet(tiny.unet, PeerLane(f"127.0.0.1:{peer.port}", SECRET, tiny.unet))
    fused = render(tiny, split)
    split.close()
    assert peer.steps == 6 and split.stats.fell_back is None
    assert (fused == render(tiny, Reference(tiny.unet))).all()


def test_a_peer_killed_mid_image_loses_nothing(tiny: Components, peer: PeerServer) -> None:
    lane = PeerLane(f"127.0.0.1:{peer.port}", SECRET, tiny.unet, deadline_s=5.0)
    original = lane.run
    calls = []

    def dying(*args: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            peer.close()  # the peer goes away after two steps
        return original(*args)

    lane.run = dying  # type: ignore[method-assign]
    split = SplitUNet(tiny.unet, lane)
    fused = render(tiny, split)
    assert split.stats.fell_back is not None and split.stats.split_steps == 2
    reference = render(tiny, Reference(tiny.unet))
    assert (fused == reference).all()  # the same image, finished here with the same calls
    assert (render(tiny) != reference).any()  # (here one batch-2 call differs, so finishing with it would show)


def test_a_peer_with_other_weights_refuses(tiny: Components) -> None:
    other = build_tiny_components().unet
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    server = PeerServer(other, "127.0.0.1", 0, SECRET).start()
    try:
        with pytest.raises(ChannelError, match="other weights"):
            PeerLane(f"127.0.0.1:{server.port}", SECRET, tiny.unet)
    finally:
        server.close()


def test_the_handshake_refuses_a_wrong_secret() -> None:
    left, right = socket.socketpair()
    outcome: dict[str, BaseException] = {}

    def server() -> None:
        try:
            handshake(right, b"the real secret", "server")
        except ChannelError as error:
            outcome["server"] = error

    thread = threading.Thread(target=server)
    thread.start()
    with pytest.raises(ChannelError, match="shared secret"):
        handshake(left, b"a guess", "client")
    thread.join(5)
    assert "server" in outcome
    with pytest.raises(ChannelError, match="no shared secret"):
        handshake(left, b"", "client")
    left.close()
    right.close()


def test_frames_round_trip_and_malformed_ones_are_refused() -> None:
    left, right = socket.socketpair()
    tensor = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    send_tensor(left, tensor)
    assert torch.equal(expect_tensor(right, 1024), tensor)
    send_control(left, {"op": "step"})
    assert expect_control(right) == {"op": "step"}
    send_tensor(left, tensor)
    with pytest.raises(ChannelError, match="limit"):
        receive(right, 16)  # over the caller's byte limit: refused before the body is read
    right2, left2 = socket.socketpair()
    left2.sendall(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ChannelError, match="does not speak"):
        receive(right2, 1024)
    lying = MAGIC + struct.pack(">BBB", 2, 1, 1) + struct.pack(">I", 4) + struct.pack(">Q", 8)
    right3, left3 = socket.socketpair()
    left3.sendall(lying)  # 4 float32 are 16 bytes, not 8
    with pytest.raises(ChannelError, match="8 bytes for shape"):
        receive(right3, 1024)
    for sock in (left, right, left2, right2, left3, right3):
        sock.close()


def test_the_diffusers_pipeline_with_its_unet_split(tiny: Components) -> None:
    """`StableDiffusionParallelPipeline` is called like diffusers' pipeline and gives the same-split bytes."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from distributed.parallel import StableDiffusionParallelPipeline

    def pipeline() -> Any:
        parts = build_tiny_components()
        return StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=parts.unet,
            scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def image(pipe: Any) -> np.ndarray:
        generator = torch.Generator().manual_seed(3)
        out = pipe("a red house", num_inference_steps=4, height=128, width=128, generator=generator, output_type="np")
        return np.asarray(out.images[0])

    parallel = StableDiffusionParallelPipeline.from_pipe(pipeline(), ["cpu", "cpu"])
    fused = image(parallel)
    assert parallel.split.stats.split_steps == 4
    reference = pipeline()
    reference.unet = Reference(reference.unet)
    assert (fused == image(reference)).all()


def test_auto_mode_times_each_shape_once_and_splits_only_where_faster(tiny: Components) -> None:
    from distributed.worker.lanes import CfgLanes, LaneSettings

    lanes = CfgLanes(LaneSettings(["cpu", "cpu"], mode="auto"))
    use = lanes.prepare(tiny, 1, 64, 64)
    assert use.split is not None
    speedup = lanes.speedups["2x4x8x8"]  # measured once for this guidance batch shape
    if abs(speedup - 1.0) > 0.005:  # (a tie may round either way)
        assert use.split.enabled == (speedup > 1.0)
    lanes.prepare(tiny, 1, 64, 64)
    assert list(lanes.speedups) == ["2x4x8x8"]  # not timed again
    assert lanes.describe()["cfg_parallel"] == "auto"
    off = CfgLanes(LaneSettings(["cpu", "cpu"], mode="off"))
    assert off.prepare(tiny, 1, 64, 64).split is None
    lanes.close()
