"""A headless worker served by uvicorn in a thread of the test process, for client and API tests: no child process
to start (a second instead of five). Tests that kill or restart a worker keep LocalWorker's real processes."""

from __future__ import annotations

from types import TracebackType

import torch

from distributed.worker.app import create_app
from distributed.worker.checkpoints import TINY, CheckpointRegistry
from distributed.worker.service import WorkerService
from distributed.worker.threaded import ThreadServer


class ThreadWorker:
    def __init__(
        self, name: str = "thread", emulate_ipm: float | None = None, api_auth: str | None = None, threads: int = 1
    ) -> None:
        """`threads`: torch's CPU threads, set for the whole test process (output bytes depend on it)."""
        self.name = name
        self._threads = threads
        self._emulate_ipm = emulate_ipm
        self._api_auth = api_auth
        self._server = ThreadServer()
        self.port, self.url = self._server.port, self._server.url
        self.service: WorkerService | None = None

    def start(self, timeout: float = 60.0) -> ThreadWorker:
        torch.set_num_threads(self._threads)
        service = WorkerService(CheckpointRegistry(None, []), TINY, emulate_ipm=self._emulate_ipm)
        service.load_initial()
        self.service = service
        self._server.start(create_app(service, self._api_auth), timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.service is not None:
            self.service.state.interrupt()  # a render in progress ends at its next step
        self._server.stop(timeout)

    def __enter__(self) -> ThreadWorker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ThreadWorker({self.name!r}, {self.url})"

    def log_tail(self, lines: int = 30) -> str:  # LocalWorker's interface, for failure messages
        return ""
