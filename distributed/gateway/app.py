"""The gateway's HTTP face: A1111's /sdapi/v1 for many clients over one fleet, /distributed/v1, and a status page.

Generation routes are `async`: each job runs in a thread of its own while the route also waits for the client to
disconnect (the ASGI server says so without polling); a client gone mid-job has its job interrupted at once, which
interrupts its chunks on the workers and frees them for the other jobs.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from distributed import __version__
from distributed.engine.config import parse_api_auth
from distributed.engine.fleet import Fleet, FleetMember
from distributed.errors import JobError, NoWorkersError
from distributed.gateway.catalog import LISTINGS, Catalog, ModelNotFound
from distributed.gateway.page import status_page
from distributed.gateway.queue import IDLE_PROGRESS, JobQueue, QueuedJob, QueueFull
from distributed.gateway.translate import RequestError, answer, build_spec, checkpoint_of
from distributed.master.payload import Checkpoint, lora_names
from distributed.master.preflight import Needs, prepare_worker
from distributed.worker.guards import (
    DEFAULT_MAX_BODY,
    BodyLimit,
    auth_dependency,
    basic_credentials,
    install_auth_handler,
)

logger = logging.getLogger(__name__)


@dataclass
class Gateway:
    fleet: Fleet
    queue: JobQueue
    catalog: Catalog
    api_auth: str | None = None
    default_checkpoint: str | None = None  # set by POST /options; a request's override_settings wins
    pool: ThreadPoolExecutor = field(init=False)  # one thread per job the queue may hold: none waits for a thread

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.queue.max_queue, thread_name_prefix="serve-job")

    def close(self) -> None:
        for queued in self.queue.jobs():
            queued.job.interrupt()
        self.catalog.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def caller_of(request: Request) -> str:
    """Who is asking: the --api-auth user and the client's address (clients sharing both are one caller)."""
    user, _ = basic_credentials(request)
    host = request.client.host if request.client else "?"
    return f"{user}@{host}" if user else host


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (after the body, the server's next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


def _admit(kind: str, checkpoint: str | None, loras: set[str]) -> Any:
    needs = Needs(kind, checkpoint=Checkpoint(title=checkpoint) if checkpoint else None, loras=frozenset(loras))

    def admit(member: FleetMember) -> dict[str, Any]:
        return prepare_worker(member, needs).request

    return admit


def _failure(error: JobError, queued: QueuedJob, body: dict[str, Any]) -> JSONResponse:
    """The job's error naming the workers and causes, with the images that did arrive (none is lost)."""
    status = 503 if isinstance(error, NoWorkersError) else 500
    made = answer(queued.spec, body, error.partial) if error.partial is not None else {}
    return _error(status, str(error), error=type(error).__name__, **made)


def create_app(gateway: Gateway, max_body: int = DEFAULT_MAX_BODY) -> FastAPI:
    app = FastAPI(title="distributed serve", version=__version__)
    app.add_middleware(BodyLimit, limit=max_body)
    install_auth_handler(app)
    auth = Depends(auth_dependency(parse_api_auth(gateway.api_auth)))

    async def generate(kind: str, request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "the request body is not JSON", error="RequestError")
        if not isinstance(body, dict):
            return _error(422, "the request body must be a JSON object", error="RequestError")
        try:
            spec = build_spec(kind, body)
        except RequestError as exc:
            return _error(422, str(exc), error="RequestError", fields=[exc.field])
        checkpoint = checkpoint_of(body, gateway.default_checkpoint)
        loras = lora_names(str(body.get("prompt", "")), str(body.get("negative_prompt", "")))
        try:
            if checkpoint:
                await run_in_threadpool(gateway.catalog.workers_with_checkpoint, checkpoint)
            await run_in_threadpool(gateway.catalog.check_loras, loras)
        except ModelNotFound as exc:
            return _error(404, str(exc), error="ModelNotFound")
        try:
            queued = gateway.queue.submit(caller_of(request), spec, _admit(kind, checkpoint, loras))
        except QueueFull as exc:
            response = _error(503, str(exc), error="QueueFull")
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        return await _run(queued, body, request)

    async def _run(queued: QueuedJob, body: dict[str, Any], request: Request) -> Any:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(gateway.pool, gateway.queue.run, queued)
        gone: asyncio.Future[None] = asyncio.ensure_future(_disconnected(request))
        watched: list[asyncio.Future[Any]] = [work, gone]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            logger.info("job %d: the client went away; interrupting it on its workers", queued.id)
            queued.job.interrupt()
        gone.cancel()
        try:
            result = await work
        except JobError as error:
            return _failure(error, queued, body)
        return answer(queued.spec, body, result)

    @app.post("/sdapi/v1/txt2img", dependencies=[auth])
    async def txt2img(request: Request) -> Any:
        return await generate("txt2img", request)

    @app.post("/sdapi/v1/img2img", dependencies=[auth])
    async def img2img(request: Request) -> Any:
        return await generate("img2img", request)

    @app.get("/sdapi/v1/progress", dependencies=[auth])
    async def progress(request: Request) -> Any:
        jobs = gateway.queue.jobs(caller_of(request))
        return jobs[-1].progress() if jobs else IDLE_PROGRESS

    @app.post("/sdapi/v1/interrupt", dependencies=[auth])
    async def interrupt(request: Request) -> Any:
        for queued in gateway.queue.jobs(caller_of(request)):
            queued.job.interrupt()
        return {}

    @app.post("/sdapi/v1/skip", dependencies=[auth])
    async def skip(request: Request) -> Any:
        for queued in gateway.queue.jobs(caller_of(request)):
            queued.job.skip()
        return {}

    def listing_route(kind: str) -> None:
        async def listing() -> Any:
            return await run_in_threadpool(gateway.catalog.listing, kind)

        app.get(f"/sdapi/v1/{kind}", dependencies=[auth], name=kind)(listing)

    for kind in LISTINGS:
        listing_route(kind)

    @app.get("/sdapi/v1/scripts", dependencies=[auth])
    async def scripts() -> Any:
        return await run_in_threadpool(gateway.catalog.scripts)

    @app.get("/sdapi/v1/options", dependencies=[auth])
    async def get_options() -> Any:
        options = await run_in_threadpool(gateway.catalog.options)
        if gateway.default_checkpoint:
            options["sd_model_checkpoint"] = gateway.default_checkpoint
        return options

    @app.post("/sdapi/v1/options", dependencies=[auth])
    async def set_options(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, dict):
            return _error(422, "options must be a JSON object", error="RequestError")
        other = sorted(set(body) - {"sd_model_checkpoint"})
        if other:
            detail = "the gateway sets only sd_model_checkpoint; send other settings per request in override_settings"
            return _error(422, f"{', '.join(other)}: {detail}", error="RequestError", fields=other)
        if body.get("sd_model_checkpoint"):
            try:
                await run_in_threadpool(gateway.catalog.workers_with_checkpoint, str(body["sd_model_checkpoint"]))
            except ModelNotFound as exc:
                return _error(404, str(exc), error="ModelNotFound")
        gateway.default_checkpoint = body.get("sd_model_checkpoint") or None
        return None

    @app.get("/distributed/v1/workers", dependencies=[auth])
    async def workers() -> Any:
        held = gateway.queue.share.holders()
        return [_worker_view(member, held.get(member.name)) for member in gateway.fleet]

    @app.get("/distributed/v1/queue", dependencies=[auth])
    async def queue() -> Any:
        return [queued.summary() for queued in gateway.queue.jobs()]

    @app.get("/distributed/v1/status", dependencies=[auth])
    async def status() -> Any:
        return {
            "version": __version__,
            "jobs": len(gateway.queue.jobs()),
            "max_queue": gateway.queue.max_queue,
            "finished": gateway.queue.finished,
            "workers": {m.name: m.state.value for m in gateway.fleet},
            "default_checkpoint": gateway.default_checkpoint,
        }

    @app.get("/", dependencies=[auth], response_class=HTMLResponse)
    async def page() -> Any:
        held = gateway.queue.share.holders()
        views = [_worker_view(member, held.get(member.name)) for member in gateway.fleet]
        return status_page(views, [queued.summary() for queued in gateway.queue.jobs()], gateway.queue.finished)

    return app


def _worker_view(member: FleetMember, job: int | None) -> dict[str, Any]:
    status = member.status
    cost = member.cost
    return {
        "name": member.name,
        "url": member.config.url,
        "state": status.state.value,
        "reason": status.reason,
        "last_error": status.last_error,
        "job": job,
        "measured": member.calibrated,
        # at A1111's usual 512x512, 20 steps, as the benchmark quotes it
        "images_per_minute_512px_20_steps": round(cost.ipm(), 3) if cost is not None and member.calibrated else None,
    }
