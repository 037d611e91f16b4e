"""REST routes under /distributed/v1, behind the webui's --api-auth when it is set. Secrets never go out.

Only FastAPI here (no `modules`): the adapter passes the manager and the --api-auth value in, so tests mount the
routes on a plain FastAPI app.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from distributed import __version__
from distributed.engine.config import FleetOptions, parse_api_auth
from distributed.engine.costmodel import Workload
from distributed.engine.lane import MASTER
from distributed.errors import ConfigError
from distributed.master.manager import FleetManager
from distributed.master.views import (
    BenchmarkRequest,
    BenchmarkResultView,
    MessageView,
    StatusView,
    VersionView,
    WorkerInput,
    WorkerView,
)
from distributed.webui.runtime import OwnApi

PREFIX = "/distributed/v1"


def basic_auth(api_auth: str | None) -> Callable[..., None] | None:
    users = parse_api_auth(api_auth)
    if not users:
        return None
    scheme = HTTPBasic()

    def check(credentials: HTTPBasicCredentials = Depends(scheme)) -> None:  # noqa: B008 - FastAPI's idiom
        expected = users.get(credentials.username)
        if expected is None or not secrets.compare_digest(credentials.password, expected):
            raise HTTPException(
                status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
            )

    return check


def _bad_request(error: ConfigError) -> HTTPException:
    status = 404 if "no such worker" in str(error) else 422
    return HTTPException(status_code=status, detail=str(error))


def build_router(manager: FleetManager, api_auth: str | None, own: OwnApi | None = None) -> APIRouter:
    check = basic_auth(api_auth)
    router = APIRouter(prefix=PREFIX, tags=["distributed"], dependencies=[Depends(check)] if check else [])

    @router.get("/version", response_model=VersionView)
    def version() -> Any:
        return VersionView(version=__version__)

    @router.get("/workers", response_model=list[WorkerView])
    def list_workers() -> Any:
        return manager.workers()

    @router.post("/workers", response_model=WorkerView, status_code=201)
    def add_worker(data: WorkerInput) -> Any:
        try:
            return manager.add(data)
        except ConfigError as error:
            raise _bad_request(error) from None

    @router.put("/workers/{name}", response_model=WorkerView)
    def update_worker(name: str, data: WorkerInput) -> Any:
        try:
            return manager.update(name, data)
        except ConfigError as error:
            raise _bad_request(error) from None

    @router.delete("/workers/{name}", response_model=MessageView)
    def delete_worker(name: str) -> Any:
        try:
            manager.remove(name)
        except ConfigError as error:
            raise _bad_request(error) from None
        return MessageView(message=f"removed {name}")

    @router.get("/status", response_model=StatusView)
    def status() -> Any:
        return manager.status()

    @router.put("/options", response_model=FleetOptions)
    def set_options(options: FleetOptions) -> Any:
        try:
            return manager.set_options(options)
        except ConfigError as error:
            raise _bad_request(error) from None

    @router.post("/benchmark", response_model=list[BenchmarkResultView])
    def benchmark(request: BenchmarkRequest) -> Any:
        try:
            workload = Workload(request.width, request.height, request.steps)
            names = [name for name in request.workers if name != MASTER]
            outcomes = (
                list(manager.benchmark(names, workload, request.budget_s)) if names or not request.workers else []
            )
            if MASTER in request.workers:  # this machine, through its own API, from outside any generation
                if own is None or own.url is None:
                    raise HTTPException(
                        status_code=409, detail=f"cannot benchmark {MASTER}: {own.missing if own else 'no API'}"
                    )
                outcomes.append(manager.benchmark_master(own.url, own.auth, workload, request.budget_s))
        except ConfigError as error:
            raise _bad_request(error) from None
        return [
            BenchmarkResultView(worker=o.worker, ipm=round(o.cost.ipm(), 3) if o.cost else None, error=o.error)
            for o in outcomes
        ]

    return router


def add_routes(app: FastAPI, manager: FleetManager, api_auth: str | None, own: OwnApi | None = None) -> None:
    app.include_router(build_router(manager, api_auth, own))
