"""Headless workers started as local processes: for the quick start, the demo, benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

READY_MARKER = "Uvicorn running on"  # uvicorn logs this once the socket is listening


class WorkerStartError(RuntimeError):
    """A local worker process exited or did not become ready in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalWorker:
    """`python -m distributed worker` in a child process, its log kept in memory and optionally in a file."""

    def __init__(
        self,
        name: str = "worker",
        port: int | None = None,
        model: str = "tiny",
        emulate_ipm: float | None = None,
        threads: int | None = 1,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        tls: tuple[Path, Path] | None = None,  # (certificate, key): serve https
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        args = [
            os.environ.get("DISTRIBUTED_WORKER_PYTHON") or sys.executable,  # tests on other pins use the main venv
            "-m",
            "distributed",
            "worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--model",
            model,
            "--log-level",
            "info",
        ]
        if emulate_ipm is not None:
            args += ["--emulate-ipm", str(emulate_ipm)]
        if threads:
            args += ["--threads", str(threads)]
        if tls:
            args += ["--tls-certfile", str(tls[0]), "--tls-keyfile", str(tls[1])]
        self.args = [*args, *extra_args]
        self.log_path = log_path
        self.log_lines: list[str] = []
        self._ready = threading.Event()
        self._exited = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> LocalWorker:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> LocalWorker:
        """Start the process without waiting (start several, then wait for each: they load in parallel)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
        )
        assert self._process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._process.stdout,), daemon=True, name=f"log-{self.name}"
        )
        self._reader.start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> LocalWorker:
        assert self._process is not None, "launch() first"
        if not self._ready.wait(timeout):
            self.stop()
            raise WorkerStartError(f"{self.name}: not ready after {timeout:.0f} s\n{self.log_tail()}")
        if self._exited.is_set():  # the output ended before the ready line: the process is exiting
            status = self._process.wait(timeout=timeout)
            raise WorkerStartError(f"{self.name}: exited with status {status}\n{self.log_tail()}")
        return self

    def _read(self, stream: IO[str]) -> None:
        handle = self.log_path.open("a", encoding="utf-8") if self.log_path else None
        try:
            for line in stream:
                self.log_lines.append(line.rstrip("\n"))
                if handle:
                    handle.write(line)
                    handle.flush()
                if READY_MARKER in line:
                    self._ready.set()
        finally:
            if handle:
                handle.close()
            self._exited.set()
            self._ready.set()  # wake a waiting start(); it checks whether the process is gone

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines[-lines:])

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def kill(self) -> None:
        """Die at once, as a crashed machine would."""
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> LocalWorker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_all(workers: Sequence[LocalWorker], timeout: float = 60.0) -> None:
    """Launch every worker, then wait for each: they load their models in parallel."""
    for worker in workers:
        worker.launch()
    for worker in workers:
        worker.wait_ready(timeout)
