"""One worker's /sdapi/v1 client: a requests.Session, timeouts on every call, TLS, auth, errors mapped.

Every failure leaves as an exception from distributed.errors naming the worker; nothing from `requests` escapes.
Responses are read with a size cap, so a broken or hostile worker cannot make the master allocate without bound.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from distributed.engine.config import Timeouts, WorkerConfig
from distributed.errors import (
    ConfigError,
    WorkerAuthError,
    WorkerError,
    WorkerHTTPError,
    WorkerInvalidResponse,
    WorkerModelMissing,
    WorkerTimeout,
    WorkerTLSError,
    WorkerUnreachable,
)
from distributed.images import MAX_IMAGE_PIXELS

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 512 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_READ_BLOCK = 1 << 20


@dataclass
class GenerationResponse:
    images: list[bytes]  # PNG files as sent, in index order
    info: dict[str, Any]

    @property
    def infotexts(self) -> list[str]:
        texts = self.info.get("infotexts")
        return [str(t) for t in texts] if isinstance(texts, list) else []


def resolve_auth(config: WorkerConfig) -> tuple[str, str] | None:
    if config.auth is None:
        return None
    if config.auth.password is not None:
        return config.auth.user, config.auth.password.get_secret_value()
    variable = config.auth.password_env or ""
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"environment variable {variable} is not set", worker=config.name, field="auth.password_env")
    return config.auth.user, value


class _UnverifiedHTTPSPool(HTTPSConnectionPool):
    """The https pool of a worker whose certificate the user chose not to check (said once in the log). urllib3
    warns InsecureRequestWarning from HTTPSConnectionPool._validate_conn on every request; this pool does what that
    method does except the warning, so nothing process-wide (warnings.filters) has to change to keep it quiet."""

    def _validate_conn(self, conn: Any) -> None:
        HTTPConnectionPool._validate_conn(self, conn)
        if getattr(conn, "sock", None) is None:  # connect before the request, as urllib3 does: TLS errors map alike
            conn.connect()


class _UnverifiedAdapter(HTTPAdapter):
    """Mounted on one worker's session only when its verification is off: its https pools are the quiet kind."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "https": _UnverifiedHTTPSPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:  # HTTPS_PROXY set: the same, through it
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {**manager.pool_classes_by_scheme, "https": _UnverifiedHTTPSPool}
        return manager


class WorkerClient:
    def __init__(self, config: WorkerConfig, timeouts: Timeouts, verify_tls_default: bool = True) -> None:
        self.name = config.name
        self.base_url = config.url.rstrip("/")
        self.timeouts = timeouts
        self.session = requests.Session()
        self.session.auth = resolve_auth(config)
        # passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's verify=False otherwise
        self.verify = verify_tls_default if config.verify_tls is None else config.verify_tls
        if not self.verify and self.base_url.startswith("https://"):
            # said once here, per worker, instead of urllib3's InsecureRequestWarning on every request. Only this
            # session's pools stay quiet: the process-wide warnings filters are left alone (a filter added here
            # would silence other code's warnings; catch_warnings around requests is not thread-safe)
            logger.warning("worker %s: TLS certificate verification is off", self.name)
            self.session.mount("https://", _UnverifiedAdapter())
        self.session.headers["User-Agent"] = "distributed-master"
        self.max_response_bytes = MAX_RESPONSE_BYTES

    def close(self) -> None:
        self.session.close()

    def _timeout(self, read_s: float | None) -> tuple[float, float]:
        return (self.timeouts.connect_s, read_s if read_s is not None else self.timeouts.probe_s)

    def request(self, method: str, path: str, *, payload: Any = None, read_s: float | None = None) -> Any:
        """Call the worker and return its JSON; every failure is a WorkerError."""
        url = f"{self.base_url}{path}"
        timeout = self._timeout(read_s)
        # the read timeout bounds each wait for bytes; this bounds the whole answer (a worker trickling bytes)
        deadline = time.monotonic() + timeout[0] + timeout[1]
        sent = time.monotonic()
        try:
            with self.session.request(
                method, url, json=payload, timeout=timeout, stream=True, verify=self.verify
            ) as response:
                body = self._read_capped(response, path, deadline)
                status = response.status_code
        except requests.exceptions.RequestException as exc:
            logger.debug("%s %s failed after %.3f s", method, url, time.monotonic() - sent)
            raise self._mapped(exc, method, url, timeout) from None
        # --distributed-debug: every request (the URL never holds credentials: config refuses them; auth is a header)
        logger.debug("%s %s -> %d in %.3f s (%d bytes)", method, url, status, time.monotonic() - sent, len(body))
        return self._decode(f"{method} {url}", path, status, body, payload)

    def _mapped(self, exc: requests.exceptions.RequestException, method: str, url: str, timeout: Any) -> WorkerError:
        """A requests failure as our error, by exception type (never by message text), naming the call's URL."""
        call = f"{method} {url}"
        causes = _causes(exc)

        def has(*types: type[BaseException]) -> bool:
            return any(isinstance(cause, types) for cause in causes)

        if has(ConnectionRefusedError):  # before timeouts: urllib3's NewConnectionError is a ConnectTimeoutError
            return WorkerUnreachable(self.name, f"{call}: connection refused (is the worker running on that port?)")
        if has(socket.gaierror):
            return WorkerUnreachable(self.name, f"{call}: the host name does not resolve")
        if has(ssl.SSLError):
            return WorkerTLSError(self.name, f"{call}: TLS handshake failed ({_short(exc)}); is it really https?")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return WorkerUnreachable(self.name, f"{call}: no connection within {timeout[0]:g} s")
        if isinstance(exc, requests.exceptions.ReadTimeout) or has(urllib3.exceptions.ReadTimeoutError, TimeoutError):
            return WorkerTimeout(self.name, f"{call}: no answer within {timeout[1]:g} s")
        dropped = (ConnectionResetError, ConnectionAbortedError, http.client.RemoteDisconnected)
        if isinstance(exc, requests.exceptions.ChunkedEncodingError) or has(*dropped, urllib3.exceptions.ProtocolError):
            return WorkerUnreachable(self.name, f"{call}: connection dropped mid-answer ({_short(exc)})")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return WorkerUnreachable(self.name, f"{call}: connection failed ({_short(exc)})")
        return WorkerInvalidResponse(self.name, f"{call}: {_short(exc)}")

    def _read_capped(self, response: requests.Response, path: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise WorkerInvalidResponse(
                self.name, f"response of {declared} bytes is over the {self.max_response_bytes} cap"
            )
        chunks = []
        size = 0
        for block in response.iter_content(_READ_BLOCK):
            size += len(block)
            if size > self.max_response_bytes:
                raise WorkerInvalidResponse(self.name, f"response is over the {self.max_response_bytes} byte cap")
            chunks.append(block)
            if time.monotonic() > deadline:
                raise WorkerTimeout(self.name, f"{path}: the answer was still arriving at its deadline")
        return b"".join(chunks)

    def _decode(self, call: str, path: str, status: int, body: bytes, payload: Any) -> Any:
        detail = _detail(body)
        if status in (401, 403):
            raise WorkerAuthError(self.name, f"{call}: HTTP {status} (credentials missing or refused)")
        if status == 404 and isinstance(payload, dict) and _asks_for_model(payload):
            raise WorkerModelMissing(self.name, f"{call}: {detail or 'model not found'}")
        if status == 404 and path.startswith("/sdapi/"):
            raise WorkerHTTPError(
                self.name, f"{call}: HTTP 404 (not an A1111 API: start the webui with --api, or check the URL)", status
            )
        if status >= 400:
            raise WorkerHTTPError(self.name, f"{call}: HTTP {status}: {detail}", status)
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise WorkerInvalidResponse(self.name, f"{call}: the answer is not JSON ({body[:60]!r})") from None

    # -- the API -------------------------------------------------------------------------------------------------
    def generate(self, kind: str, payload: dict[str, Any], read_s: float) -> GenerationResponse:
        body = self.request("POST", f"/sdapi/v1/{kind}", payload=payload, read_s=read_s)
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise WorkerInvalidResponse(self.name, f"{kind}: no images list in the answer")
        try:
            info = json.loads(body.get("info") or "{}")
        except (TypeError, ValueError):
            raise WorkerInvalidResponse(self.name, f"{kind}: info is not JSON") from None
        if not isinstance(info, dict):
            raise WorkerInvalidResponse(self.name, f"{kind}: info is not a JSON object")
        images = []
        for number, encoded in enumerate(body["images"]):
            if not isinstance(encoded, str):
                raise WorkerInvalidResponse(self.name, f"{kind}: image {number} is not a string")
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise WorkerInvalidResponse(self.name, f"{kind}: image {number} is not base64") from None
            if not raw.startswith(PNG_SIGNATURE) or raw[12:16] != b"IHDR":
                raise WorkerInvalidResponse(self.name, f"{kind}: image {number} is not a PNG")
            width, height = struct.unpack(">II", raw[16:24])
            if width * height > MAX_IMAGE_PIXELS:
                raise WorkerInvalidResponse(
                    self.name, f"{kind}: image {number} is {width}x{height}, over the {MAX_IMAGE_PIXELS}-pixel limit"
                )
            images.append(raw)
        return GenerationResponse(images, info)

    def progress(self) -> dict[str, Any]:
        body = self.request("GET", "/sdapi/v1/progress?skip_current_image=true")
        if not isinstance(body, dict):
            raise WorkerInvalidResponse(self.name, "progress is not a JSON object")
        return body

    def ping(self) -> None:
        self.request("GET", "/internal/ping")

    def interrupt(self) -> None:
        self.request("POST", "/sdapi/v1/interrupt")

    def skip(self) -> None:
        self.request("POST", "/sdapi/v1/skip")

    def sd_models(self) -> list[dict[str, Any]]:
        return self.listing("/sdapi/v1/sd-models")

    def listing(self, path: str) -> list[dict[str, Any]]:
        """A list endpoint (/loras, /sd-vae): the entries that are JSON objects."""
        body = self.request("GET", path, read_s=max(self.timeouts.probe_s, 10.0))
        if not isinstance(body, list):
            raise WorkerInvalidResponse(self.name, f"{path} is not a list")
        return [entry for entry in body if isinstance(entry, dict)]

    def script_info(self) -> list[dict[str, Any]]:
        return self.listing("/sdapi/v1/script-info")

    def options(self) -> dict[str, Any]:
        body = self.request("GET", "/sdapi/v1/options")
        if not isinstance(body, dict):
            raise WorkerInvalidResponse(self.name, "options is not a JSON object")
        return body


def _asks_for_model(payload: dict[str, Any]) -> bool:
    overrides = payload.get("override_settings") or {}
    return isinstance(overrides, dict) and "sd_model_checkpoint" in overrides


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:300]
    return str(data)[:300]


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (urllib3's reasons, causes, contexts, arguments), a few levels deep."""
    found: list[BaseException] = []
    todo = [error]
    while todo and len(found) < 16:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        todo += [item for item in linked if isinstance(item, BaseException)]
    return found
