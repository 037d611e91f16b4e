"""A peer worker as the CFG split's second lane: a persistent TCP step channel (frames.py) to another process or host.

The listening side (`PeerServer`, a worker started with `--cfg-listen PORT`) holds the same checkpoint: the first
control frame after the handshake carries the UNet's fingerprint, and a peer with other weights refuses. Then, per
step: a control frame naming what follows (the half's sample, its timestep, its context when it changed since the
last step, other UNet tensors by name), the tensors, and the peer answers the noise prediction as one tensor frame.
Every tensor's size is checked against the job (the sample's shape, a byte limit) before it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
from typing import Any

import torch

from distributed.parallel.frames import (
    ChannelError,
    expect_control,
    expect_tensor,
    handshake,
    send_control,
    send_tensor,
)

logger = logging.getLogger(__name__)
MAX_TENSOR_BYTES = 256 * 1024 * 1024  # SDXL at 2048x2048, batch 8, fp32 is far below this
IDLE_S = 3600.0  # a connected peer waiting for its next step


def fingerprint(unet: torch.nn.Module) -> str:
    """Which weights a UNet holds: its parameter names and shapes, and the first bytes of a few of them."""
    digest = hashlib.sha256()
    parameters = list(unet.named_parameters())
    for name, value in parameters:
        digest.update(f"{name}{tuple(value.shape)}".encode())
    for _, value in parameters[:3] + parameters[-3:]:
        digest.update(value.detach().to("cpu", torch.float32).flatten()[:256].numpy().tobytes())
    return digest.hexdigest()[:16]


def _flatten(extra: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet's other tensor arguments as name -> tensor ("added_cond_kwargs.text_embeds", "down.0", ...)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in extra.items():
        if isinstance(value, torch.Tensor):
            flat[key] = value
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, (list, tuple)):
            flat.update({f"{key}#{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
        elif value is not None:
            raise ChannelError(f"the step channel cannot carry the UNet argument {key}")
    return flat


def _unflatten(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for name, value in flat.items():
        if "." in name:
            key, sub = name.split(".", 1)
            extra.setdefault(key, {})[sub] = value
        elif "#" in name:
            key, index = name.split("#", 1)
            extra.setdefault(key, []).insert(int(index), value)
        else:
            extra[name] = value
    return {k: tuple(v) if isinstance(v, list) else v for k, v in extra.items()}


def _like(value: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if value.is_floating_point():
        return value.to(weights.device, weights.dtype)
    return value.to(weights.device)


class PeerLane:
    """The client side: connects, proves the secret, checks the peer holds the same weights."""

    def __init__(self, address: str, secret: bytes, unet: torch.nn.Module, deadline_s: float = 60.0) -> None:
        host, _, port = address.rpartition(":")
        self.label = f"peer {address}"
        try:
            self._sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=deadline_s)
        except (OSError, ValueError) as exc:
            raise ChannelError(f"cannot reach the CFG peer {address}: {exc}") from exc
        self._sock.settimeout(deadline_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._context: torch.Tensor | None = None
        try:
            handshake(self._sock, secret, "client")
            send_control(self._sock, {"op": "hello", "fingerprint": fingerprint(unet)})
            answer = expect_control(self._sock)
        except ChannelError:
            self._sock.close()
            raise
        if not answer.get("ok"):
            self._sock.close()
            raise ChannelError(f"the CFG peer {address} refused: {answer.get('error')}")

    def run(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        flat = _flatten(extra)
        # the context is sent when its content changes (a new batch), not each step; content, not identity: a new
        # batch's tensor may sit where the last one was freed
        new_context = (
            self._context is None or self._context.shape != context.shape or not torch.equal(self._context, context)
        )
        t = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(timestep)
        send_control(self._sock, {"op": "step", "context": new_context, "tensors": list(flat)})
        send_tensor(self._sock, sample)
        send_tensor(self._sock, t)
        if new_context:
            send_tensor(self._sock, context)
            self._context = context.clone()
        for value in flat.values():
            send_tensor(self._sock, value)
        out = expect_tensor(self._sock, sample.numel() * sample.element_size())
        if out.shape != sample.shape:
            raise ChannelError(f"the peer answered shape {tuple(out.shape)} for {tuple(sample.shape)}")
        return out.to(sample.device, sample.dtype)

    def close(self) -> None:
        with contextlib.suppress(ChannelError):
            send_control(self._sock, {"op": "bye"})
        self._sock.close()


class PeerServer:
    """The listening side: one connection at a time renders its steps with this process's UNet."""

    def __init__(self, unet: torch.nn.Module, host: str, port: int, secret: bytes) -> None:
        self.unet = unet
        self.secret = secret
        self.fingerprint = fingerprint(unet)
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="cfg-peer", daemon=True)
        self._closed = threading.Event()
        self._active: socket.socket | None = None
        self.steps = 0

    def start(self) -> PeerServer:
        self._thread.start()
        logger.info("CFG peer listening on port %d", self.port)
        return self

    def close(self) -> None:
        """Stop listening and drop the connected peer, if any (it finishes its image alone)."""
        self._closed.set()
        self._listener.close()
        active = self._active
        if active is not None:
            with contextlib.suppress(OSError):
                active.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, address = self._listener.accept()
            except OSError:
                return  # closed
            self._active = conn
            with conn:
                conn.settimeout(IDLE_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    self._session(conn)
                except ChannelError as error:
                    logger.warning("CFG peer %s: %s", address[0], error)

    def _session(self, conn: socket.socket) -> None:
        handshake(conn, self.secret, "server")
        hello = expect_control(conn)
        if hello.get("fingerprint") != self.fingerprint:
            send_control(conn, {"ok": False, "error": f"other weights here ({self.fingerprint})"})
            return
        send_control(conn, {"ok": True})
        context: torch.Tensor | None = None
        while True:
            order = expect_control(conn)
            if order.get("op") != "step":
                return
            sample = expect_tensor(conn, MAX_TENSOR_BYTES)
            if sample.dim() != 4:
                raise ChannelError(f"a sample of shape {tuple(sample.shape)} is not a latent batch")
            timestep = expect_tensor(conn, 1024)
            if order.get("context"):
                context = expect_tensor(conn, MAX_TENSOR_BYTES)
            if context is None or context.shape[0] != sample.shape[0]:
                raise ChannelError("a step without its context")
            names = order.get("tensors") or []
            flat = {str(name): expect_tensor(conn, MAX_TENSOR_BYTES) for name in names}
            with torch.inference_mode():
                weights = next(self.unet.parameters())
                moved = {k: _like(v, weights) for k, v in flat.items()}
                out = self.unet(
                    _like(sample, weights), timestep.to(weights.device), _like(context, weights), **_unflatten(moved)
                )
                result = out.sample if hasattr(out, "sample") else out[0]
            send_tensor(conn, result)
            self.steps += 1
