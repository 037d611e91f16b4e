"""A fault-injecting HTTP proxy between the master and a real worker, for reliability tests.

Requests are forwarded to the worker; what comes back to the master depends on the fault set on the proxy. Faults
apply to generation calls (txt2img/img2img) unless `everything` is set, so the worker still looks healthy until it is
given work, as a real failing machine does. `arm(fault)` keeps the proxy healthy until the first generation request
arrives and starts the fault with that request, so the faulty worker surely holds a chunk when it fails. A proxy
made with `tls=(certificate, key)` speaks TLS until a TLS fault starts; then its handshakes fail.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


EVERY_ROUTE = (Fault.REFUSE, Fault.HANG, Fault.UNAUTHORIZED, Fault.TLS)  # faults of the machine, not of one call


class _Server(ThreadingHTTPServer):
    tls: ssl.SSLContext | None = None  # wraps each accepted connection while set

    def get_request(self) -> tuple[Any, Any]:
        connection, address = self.socket.accept()
        if self.tls is not None:
            connection = self.tls.wrap_socket(connection, server_side=True)
        return connection, address


class FaultProxy:
    def __init__(self, target: str, tls: tuple[Path, Path] | None = None) -> None:
        self.target = target.rstrip("/")
        self.fault = Fault.NONE
        self.everything = False  # apply the fault to every route, not only generation
        self.armed = Fault.NONE  # starts with the first generation request
        self.requests_seen = 0
        self.paths_seen: list[str] = []  # every request's method and path, in order
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._uses_tls = tls is not None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.tls = context
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        # a TLS fault is a plain-HTTP server behind an https URL: the handshake cannot succeed
        scheme = "https" if self.fault == Fault.TLS or self._uses_tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def arm(self, fault: Fault) -> None:
        """Healthy until the first generation request, which meets `fault`, as does what follows."""
        self.armed = fault

    def _trigger(self) -> None:
        fault, self.armed = self.armed, Fault.NONE
        self.fault = fault
        self.everything = fault in EVERY_ROUTE
        if fault == Fault.TLS:
            self._server.tls = None  # from now on the port answers TLS handshakes in plain HTTP
        if fault == Fault.REFUSE:  # the port closes: every later connection is refused
            threading.Thread(target=self._close_port, daemon=True).start()

    def _close_port(self) -> None:
        self._server.shutdown()
        self._server.server_close()

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
                if proxy.armed != Fault.NONE and self.path.split("?")[0] in GENERATION:
                    proxy._trigger()
                faulty = proxy.everything or self.path.split("?")[0] in GENERATION
                fault = proxy.fault if faulty else Fault.NONE
                if fault in (Fault.REFUSE, Fault.TLS):  # the connection that held the chunk dies with the port
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
def fault_proxy(target: str, tls: tuple[Path, Path] | None = None) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target, tls).start()
    try:
        yield proxy
    finally:
        proxy.stop()
