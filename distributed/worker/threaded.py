"""An ASGI app served by uvicorn in a thread of this process, on a port the OS chose on 127.0.0.1: the bench's
gateway, and the tests' in-process workers and gateway. It says when it listens (no polling for readiness)."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29 tries this from any thread
        pass


class ThreadServer:
    """The port is bound at once (`port`, `url` are known before the app exists); `start` serves an app."""

    def __init__(self, app: Any = None) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, app: Any, timeout: float = 30.0) -> ThreadServer:
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        if not server.ready.wait(timeout):
            raise RuntimeError(f"{self.url} did not start serving within {timeout:.0f} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> ThreadServer:
        return self.start(self.app)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
