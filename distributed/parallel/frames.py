"""The CFG step channel's wire format and handshake: length-prefixed frames over one TCP connection.

A frame is a fixed header then a body. Header (big-endian): magic b"DCFG", kind (1 byte), dtype code (1 byte),
rank (1 byte), then `rank` dimensions (4 bytes each) and the body's length (8 bytes). A control frame (kind CONTROL)
carries UTF-8 JSON; a tensor frame carries the tensor's raw bytes, C-contiguous, in the dtype the header names. Nothing
is ever unpickled, and every size is checked before a byte is read: the body must be exactly the header's shape times
the dtype's size, and no larger than the caller's limit.

Handshake, before any tensor moves: each side sends a random nonce, then HMAC-SHA256(secret, the other side's nonce
and its own role); each side checks the other's proof. A peer without the secret learns nothing and gets nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import torch

MAGIC = b"DCFG"
HEAD = struct.Struct(">4sBBB")
DIM = struct.Struct(">I")
LENGTH = struct.Struct(">Q")
MAX_RANK = 8
MAX_CONTROL_BYTES = 64 * 1024
NONCE_BYTES = 32
SECRET_ENV = "DISTRIBUTED_CFG_SECRET"


class Kind(IntEnum):
    CONTROL = 1
    TENSOR = 2


DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16, 4: torch.int64}
CODES = {dtype: code for code, dtype in DTYPES.items()}


class ChannelError(ConnectionError):
    """The step channel failed: the peer went away, broke the format, failed the handshake, or missed a deadline."""


@dataclass
class Frame:
    kind: Kind
    control: dict[str, Any] | None = None
    tensor: torch.Tensor | None = None


def _read_exact(sock: socket.socket, count: int) -> bytes:
    chunks = []
    left = count
    while left:
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except TimeoutError as exc:
            raise ChannelError(f"no data from the peer within {sock.gettimeout()} s") from exc
        except OSError as exc:
            raise ChannelError(f"the connection failed: {exc}") from exc
        if not chunk:
            raise ChannelError("the peer closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise ChannelError(f"sending to the peer failed: {exc}") from exc


def send_control(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode("utf-8")
    _send(sock, HEAD.pack(MAGIC, Kind.CONTROL, 0, 0) + LENGTH.pack(len(body)) + body)


def send_tensor(sock: socket.socket, tensor: torch.Tensor) -> None:
    if tensor.dtype not in CODES:
        raise ValueError(f"the step channel does not carry {tensor.dtype}")
    flat = tensor.detach().to("cpu").contiguous()
    body = flat.reshape(-1).view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    dims = b"".join(DIM.pack(size) for size in flat.shape)
    _send(sock, HEAD.pack(MAGIC, Kind.TENSOR, CODES[flat.dtype], flat.dim()) + dims + LENGTH.pack(len(body)) + body)


def receive(sock: socket.socket, max_tensor_bytes: int) -> Frame:
    """The next frame, every size checked before its body is read."""
    magic, kind, code, rank = HEAD.unpack(_read_exact(sock, HEAD.size))
    if magic != MAGIC:
        raise ChannelError("the peer does not speak the CFG step channel")
    if rank > MAX_RANK:
        raise ChannelError(f"a tensor of rank {rank} is not a step tensor")
    shape = [DIM.unpack(_read_exact(sock, DIM.size))[0] for _ in range(rank)]
    (length,) = LENGTH.unpack(_read_exact(sock, LENGTH.size))
    if kind == Kind.CONTROL:
        if length > MAX_CONTROL_BYTES:
            raise ChannelError(f"a control frame of {length} bytes is over the limit")
        try:
            message = json.loads(_read_exact(sock, length).decode("utf-8"))
        except ValueError as exc:
            raise ChannelError(f"a control frame that is not JSON: {exc}") from exc
        if not isinstance(message, dict):
            raise ChannelError("a control frame that is not a JSON object")
        return Frame(Kind.CONTROL, control=message)
    if kind != Kind.TENSOR or code not in DTYPES:
        raise ChannelError(f"unknown frame kind {kind} or dtype code {code}")
    dtype = DTYPES[code]
    expected = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if length != expected or length > max_tensor_bytes:
        raise ChannelError(f"a tensor frame of {length} bytes for shape {shape} (limit {max_tensor_bytes})")
    raw = bytearray(_read_exact(sock, length))
    tensor = torch.frombuffer(raw, dtype=dtype) if length else torch.empty(0, dtype=dtype)
    return Frame(Kind.TENSOR, tensor=tensor.reshape(shape))


def expect_control(sock: socket.socket, max_tensor_bytes: int = 0) -> dict[str, Any]:
    frame = receive(sock, max_tensor_bytes)
    if frame.control is None:
        raise ChannelError("expected a control frame")
    return frame.control


def expect_tensor(sock: socket.socket, max_tensor_bytes: int) -> torch.Tensor:
    frame = receive(sock, max_tensor_bytes)
    if frame.tensor is None:
        message = (frame.control or {}).get("error", "a control frame instead of a tensor")
        raise ChannelError(f"the peer answered: {message}")
    return frame.tensor


def _proof(secret: bytes, nonce: bytes, role: bytes) -> bytes:
    return hmac.new(secret, role + nonce, hashlib.sha256).digest()


def handshake(sock: socket.socket, secret: bytes, role: str) -> None:
    """Mutual proof of the shared secret; raises ChannelError when the other side does not have it."""
    if not secret:
        raise ChannelError(f"no shared secret: set {SECRET_ENV} on both sides")
    mine = secrets.token_bytes(NONCE_BYTES)
    _send(sock, mine)
    theirs = _read_exact(sock, NONCE_BYTES)
    other = b"server" if role == "client" else b"client"
    _send(sock, _proof(secret, theirs, role.encode()))
    if not hmac.compare_digest(_read_exact(sock, 32), _proof(secret, mine, other)):
        raise ChannelError("the peer does not know the shared secret")
