"""What a job runs on: a clock, a way to start a call, and a way to wait for calls. Threads and the real clock in
use; `distributed.engine.simulation` puts a simulated clock and fake workers behind the same three methods, so a
whole job runs in milliseconds in unit tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol


class Runtime(Protocol):
    def now(self) -> float: ...

    def submit(self, call: Callable[..., Any], *args: Any) -> Future[Any]: ...

    def wait(self, futures: Iterable[Future[Any]], timeout: float) -> set[Future[Any]]:
        """The futures done by `timeout` seconds from now (at least one, unless the time ran out)."""
        ...

    def close(self) -> None: ...


class ThreadRuntime:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="distributed-job")

    def now(self) -> float:
        return time.monotonic()

    def submit(self, call: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pool.submit(call, *args)

    def wait(self, futures: Iterable[Future[Any]], timeout: float) -> set[Future[Any]]:
        done, _ = wait(list(futures), timeout=max(0.0, timeout), return_when=FIRST_COMPLETED)
        return done

    def close(self) -> None:
        # a request to a frozen worker may hold a thread until its read timeout: nothing waits for it
        self._pool.shutdown(wait=False, cancel_futures=True)
