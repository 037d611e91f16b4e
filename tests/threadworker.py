"""A headless worker served by uvicorn in a thread of the test process, for client and API tests: no child process
to start (a second instead of five). Tests that kill or restart a worker keep LocalWorker's real processes."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import torch
import uvicorn

from distributed.worker.app import create_app
from distributed.worker.checkpoints import TINY, CheckpointRegistry
from distributed.worker.service import WorkerService


class _Server(uvicorn.Server):
    """uvicorn that says when it listens (no polling for readiness)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29 tries this from any thread
        pass


class ThreadServer:
    """Any ASGI app served by uvicorn in a thread on a port the OS chose (the `serve` gateway in tests)."""

    def __init__(self, app: object) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not self._server.ready.wait(30):
            raise RuntimeError("the server did not start serving within 30 s")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


class ThreadWorker:
    def __init__(
        self, name: str = "thread", emulate_ipm: float | None = None, api_auth: str | None = None, threads: int = 1
    ) -> None:
        """`threads`: torch's CPU threads, set for the whole test process (output bytes depend on it)."""
        self.name = name
        self._threads = threads
        self._emulate_ipm = emulate_ipm
        self._api_auth = api_auth
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.service: WorkerService | None = None

    def start(self, timeout: float = 60.0) -> ThreadWorker:
        torch.set_num_threads(self._threads)
        service = WorkerService(CheckpointRegistry(None, []), TINY, emulate_ipm=self._emulate_ipm)
        service.load_initial()
        self.service = service
        app = create_app(service, self._api_auth)
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        if not server.ready.wait(timeout):
            raise RuntimeError(f"worker {self.name} did not start serving within {timeout:.0f} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None and self._thread is not None:
            if self.service is not None:
                self.service.state.interrupt()  # a render in progress ends at its next step
            self._server.should_exit = True
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> ThreadWorker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ThreadWorker({self.name!r}, {self.url})"

    def log_tail(self, lines: int = 30) -> str:  # LocalWorker's interface, for failure messages
        return ""
