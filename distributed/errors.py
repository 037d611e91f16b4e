"""The exception tree every part of `distributed` raises. Catch `DistributedError` to catch them all.

DistributedError
├── ConfigError                 workers.json or a flag is wrong: names the file, the worker and the field
├── WorkerError                 one worker failed; `.worker` names it, `.reason` is a short state reason
│   ├── WorkerUnreachable       connection refused, DNS, dropped connections
│   │   └── WorkerTLSError      the TLS handshake failed (https to an http worker, a bad certificate)
│   ├── WorkerTimeout           no answer within the connect or read timeout (or the chunk's deadline)
│   ├── WorkerAuthError         HTTP 401/403: credentials missing or refused
│   ├── WorkerModelMissing      HTTP 404 for the checkpoint/VAE the job needs
│   ├── WorkerHTTPError         any other HTTP error status; `.status`
│   └── WorkerInvalidResponse   an answer that is not what the API promises (bad JSON, wrong image count...)
└── JobError                    a whole job could not finish
    └── NoWorkersError          no worker is usable for this job (all offline, none enabled...)

An interrupted job is not an error: it returns a JobResult with `interrupted` set and the images that arrived.
"""

from __future__ import annotations

from typing import Any


class DistributedError(Exception):
    """Base of every error this package raises."""


class ConfigError(DistributedError):
    def __init__(self, message: str, *, path: str | None = None, worker: str | None = None, field: str | None = None):
        where = ", ".join(
            part
            for part in (
                f"file {path}" if path else "",
                f"worker {worker!r}" if worker else "",
                f"field {field!r}" if field else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.worker = worker
        self.field = field


class WorkerError(DistributedError):
    reason = "failed"

    def __init__(self, worker: str, message: str) -> None:
        super().__init__(f"worker {worker!r}: {message}")
        self.worker = worker
        self.detail = message


class WorkerUnreachable(WorkerError):
    reason = "unreachable"


class WorkerTLSError(WorkerUnreachable):
    reason = "TLS failed"


class WorkerTimeout(WorkerError):
    reason = "timed out"


class WorkerAuthError(WorkerError):
    reason = "auth refused"


class WorkerModelMissing(WorkerError):
    reason = "model missing"


class WorkerHTTPError(WorkerError):
    reason = "HTTP error"

    def __init__(self, worker: str, message: str, status: int) -> None:
        super().__init__(worker, message)
        self.status = status


class WorkerInvalidResponse(WorkerError):
    reason = "invalid response"


class JobError(DistributedError):
    """A job as a whole failed; `partial` holds the images that did arrive (a JobResult), so none are lost."""

    partial: Any = None


class NoWorkersError(JobError):
    pass
