"""A fault-injecting HTTP proxy between the master and a real worker, for reliability tests.

Requests are forwarded to the worker; what comes back to the master depends on the fault set on the proxy. Faults
apply to generation calls (txt2img/img2img) unless `everything` is set, so the worker still looks healthy until it is
given work, as a real failing machine does.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from tests.faults import send_json


class Fault(str, Enum):
    NONE = "none"
    REFUSE = "refuse connections"
    DROP = "drop mid-response"
    HANG = "hang without a byte"
    TRICKLE = "trickle bytes slowly"
    HTTP_500 = "HTTP 500"
    MALFORMED_JSON = "malformed JSON"
    WRONG_COUNT = "wrong number of images"
    NOT_PNG = "base64 that is not a PNG"
    UNAUTHORIZED = "401"
    TLS = "TLS handshake fails"


GENERATION = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")


class FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.fault = Fault.NONE
        self.everything = False  # apply the fault to every route, not only generation
        self.requests_seen = 0
        self.paths_seen: list[str] = []  # every request's method and path, in order
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        # a TLS fault is a plain-HTTP server behind an https URL: the handshake cannot succeed
        scheme = "https" if self.fault == Fault.TLS else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def unhang(self) -> None:
        """Let every request held by a HANG fault end now (the proxy's own threads, not the master's)."""
        held, self._release = self._release, threading.Event()
        held.set()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                proxy.requests_seen += 1
                proxy.paths_seen.append(f"{method} {self.path.split('?')[0]}")
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                faulty = proxy.everything or self.path.split("?")[0] in GENERATION
                fault = proxy.fault if faulty else Fault.NONE
                if fault == Fault.REFUSE:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == Fault.HANG:
                    proxy._release.wait(120)  # read at call time: unhang() swaps in a fresh event
                    self.close_connection = True
                    return
                if fault == Fault.UNAUTHORIZED:
                    send_json(self, 401, b'{"detail": "Incorrect username or password"}')
                    return
                if fault == Fault.HTTP_500:
                    send_json(self, 500, b'{"detail": "RuntimeError: CUDA out of memory"}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                answer = requests.request(method, proxy.target + self.path, data=body, headers=headers, timeout=120)
                raw = answer.content
                if fault == Fault.MALFORMED_JSON:
                    raw = raw[: len(raw) // 2]
                elif fault == Fault.WRONG_COUNT:
                    data = json.loads(raw)
                    data["images"] = data["images"][:-1] or []
                    raw = json.dumps(data).encode()
                elif fault == Fault.NOT_PNG:
                    data = json.loads(raw)
                    data["images"] = [base64.b64encode(b"GIF89a not a png").decode() for _ in data["images"]]
                    raw = json.dumps(data).encode()
                if fault == Fault.DROP:
                    send_json(self, answer.status_code, raw[: len(raw) // 3], length=len(raw))
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == Fault.TRICKLE:
                    send_json(self, answer.status_code, b"", length=len(raw))
                    for offset in range(0, len(raw), 64):
                        if proxy._release.wait(0.2):
                            break
                        try:
                            self.wfile.write(raw[offset : offset + 64])
                            self.wfile.flush()
                        except OSError:
                            break
                    self.close_connection = True
                    return
                send_json(self, answer.status_code, raw)

        return Handler


@contextmanager
def fault_proxy(target: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()
