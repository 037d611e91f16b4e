"""Misbehaving HTTP peers for tests: real sockets on 127.0.0.1 that hang, refuse auth, or answer garbage."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

IDLE_PROGRESS = {"progress": 0, "eta_relative": 0, "state": {"job_count": 0, "sampling_step": 0, "sampling_steps": 0}}

Responder = Callable[[str, str, bytes], tuple[int, Any] | None]  # (method, path, body) -> (status, json) or hang


def send_json(handler: BaseHTTPRequestHandler, status: int, raw: bytes, length: int | None = None) -> None:
    """Status line and headers for a JSON answer, then the body (length may promise more than is sent)."""
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(raw) if length is None else length))
    handler.end_headers()
    handler.wfile.write(raw)


@contextmanager
def fake_worker(respond: Responder, tls: tuple[Path, Path] | None = None, keep_alive: bool = False) -> Iterator[str]:
    """An HTTP server whose every answer comes from `respond`; None means: never answer (until the test ends).
    `tls`: (certificate, key) to serve https; `keep_alive`: HTTP/1.1, so a client reuses its connection."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = respond(method, self.path, body)
            if answer is None:
                release.wait(120)
                return
            status, payload = answer
            send_json(self, status, payload if isinstance(payload, bytes) else json.dumps(payload).encode())

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)  # a failed handshake drops that client
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def hangs_on_generation(method: str, path: str, body: bytes) -> tuple[int, Any] | None:
    """Healthy until it is given work; then it freezes: generation and progress never answer again."""
    if path.startswith("/sdapi/v1/txt2img"):
        hangs_on_generation.frozen = True  # type: ignore[attr-defined]
        return None
    if getattr(hangs_on_generation, "frozen", False):
        return None
    if path.startswith("/sdapi/v1/progress"):
        return 200, IDLE_PROGRESS
    return 200, {}
