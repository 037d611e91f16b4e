"""What the tab and the REST API show and accept: one model per payload, never a secret on the way out."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, SecretStr

from distributed.compat import StrictModel
from distributed.engine.config import BenchmarkRecord, Caps, FleetOptions
from distributed.engine.fleet import FleetMember


class AuthView(BaseModel):
    user: str
    has_password: bool  # a password is stored in workers.json; its value never leaves the master
    password_env: Optional[str] = None


class WorkerView(BaseModel):
    name: str
    url: str
    enabled: bool
    source: str  # "workers.json" or "--distributed-remotes"
    auth: Optional[AuthView] = None
    verify_tls: Optional[bool] = None
    caps: Caps
    state: str
    reason: str = ""
    last_error: Optional[str] = None
    ipm: Optional[float] = None  # images per minute at 512x512, 20 steps, from the cost model
    speed: Optional[str] = None  # the same in words, at the size it last rendered
    model: Optional[str] = None  # its loaded checkpoint, as its last health check said
    calibrated: bool = False
    benchmark: Optional[BenchmarkRecord] = None
    progress: Optional[float] = None  # 0..1 of its current chunk, while busy


class WorkerInput(StrictModel):
    """A worker as the tab's form or a REST client gives it. An empty password keeps the stored one. Unknown keys
    are refused (422 naming the key): a misspelt `pasword` must not be dropped silently."""

    name: str
    url: str
    enabled: bool = True
    user: Optional[str] = None
    password: Optional[SecretStr] = None
    password_env: Optional[str] = None
    verify_tls: Optional[bool] = None
    max_batch: Optional[int] = Field(None, ge=1, le=1024)
    max_pixels: Optional[int] = Field(None, ge=64 * 64)


class ThroughputPoint(BaseModel):
    when: float  # unix time the job ended
    worker: str
    images: int
    ipm: float  # this worker's images per minute in that job, at that job's workload


class JobView(BaseModel):
    running: bool
    done: int = 0
    total: int = 0
    workers: dict[str, int] = Field(default_factory=dict)  # name -> images delivered
    failures: list[str] = Field(default_factory=list)


class StatusView(BaseModel):
    version: str
    config_path: Optional[str] = None
    workers: list[WorkerView]
    options: FleetOptions
    master_ipm: Optional[float] = None
    master_speed: Optional[str] = None
    job: Optional[JobView] = None
    throughput: list[ThroughputPoint] = Field(default_factory=list)


class VersionView(BaseModel):
    version: str
    api: int = 1


class BenchmarkRequest(StrictModel):
    workers: list[str] = Field(default_factory=list)  # empty: every enabled worker; "master": this machine
    width: int = Field(512, ge=64, le=4096)  # the workload timed; speeds are quoted at 512x512, 20 steps
    height: int = Field(512, ge=64, le=4096)
    steps: int = Field(20, ge=1, le=150)
    budget_s: float = Field(10.0, ge=2, le=600)  # about how long each worker is timed (slower ones: give more)


class BenchmarkResultView(BaseModel):
    worker: str
    ipm: Optional[float] = None
    error: Optional[str] = None


class MessageView(BaseModel):
    message: str


def worker_view(member: FleetMember, source: str, progress: float | None = None) -> WorkerView:
    config = member.config
    status = member.status
    auth = None
    if config.auth is not None:
        auth = AuthView(
            user=config.auth.user, has_password=config.auth.password is not None, password_env=config.auth.password_env
        )
    return WorkerView(
        name=config.name,
        url=config.url,
        enabled=config.enabled,
        source=source,
        auth=auth,
        verify_tls=config.verify_tls,
        caps=config.caps,
        state=status.state.value,
        reason=status.reason,
        last_error=status.last_error,
        ipm=round(member.cost.ipm(), 4) if member.cost is not None and member.calibrated else None,
        speed=member.cost.describe() if member.cost is not None and member.calibrated else None,
        model=member.model or (config.benchmark.model if config.benchmark else None),
        calibrated=member.calibrated,
        benchmark=config.benchmark,
        progress=progress,
    )
