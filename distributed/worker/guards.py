"""What every HTTP face of this project guards with (the headless worker, the `serve` gateway): a bound on request
bodies, and A1111's --api-auth (HTTP Basic against USER:PASS pairs)."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 64 * 1024 * 1024


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether announced by Content-Length or streamed.

    The rest of an oversized body is read and dropped (up to `drain_factor` x `limit`) before answering, so that the
    client, still sending, sees the 413 rather than a broken connection; memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, limit: int, drain_factor: int = 4) -> None:
        self.app = app
        self.limit = limit
        self.drain_limit = limit * drain_factor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(receive, send, 0)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._refuse(receive, send, seen)

    async def _refuse(self, receive: Receive, send: Send, seen: int) -> None:
        message: Message = {"more_body": True}
        while message.get("more_body", False) and seen <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
        response = JSONResponse({"detail": f"request body over the limit of {self.limit} bytes"}, status_code=413)
        if message.get("more_body", False):
            response.headers["Connection"] = "close"
        await response({"type": "http"}, _no_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def basic_credentials(request: Request) -> tuple[str, str]:
    """The user and password of an HTTP Basic header ("", "" without one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password


def auth_dependency(credentials: dict[str, str]) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if not credentials:
            return
        user, password = basic_credentials(request)
        expected = credentials.get(user)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            raise _AuthRefused

    return check


class _AuthRefused(Exception):
    pass


def install_auth_handler(app: FastAPI) -> None:
    @app.exception_handler(_AuthRefused)
    async def auth_refused(request: Request, exc: _AuthRefused) -> JSONResponse:
        response = JSONResponse({"detail": "Incorrect username or password"}, status_code=401)
        response.headers["WWW-Authenticate"] = "Basic"
        return response
