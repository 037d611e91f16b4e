"""The worker's HTTP face: A1111's /sdapi/v1 routes over a WorkerService.

Generation routes are plain `def` (they run in the thread pool and wait their turn in the service's queue);
progress, interrupt and skip are `async def`, so they answer at once even while every pool thread waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psutil
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from distributed import __version__
from distributed.engine.config import parse_api_auth
from distributed.worker.checkpoints import ModelNotFoundError
from distributed.worker.extras import ExtrasRequest, extra_single_image, png_info, upscaler_listing
from distributed.worker.guards import DEFAULT_MAX_BODY, BodyLimit, auth_dependency, install_auth_handler
from distributed.worker.hires import LATENT_UPSCALERS
from distributed.worker.requests_check import RequestFieldError
from distributed.worker.samplers import sampler_listing, schedule_listing
from distributed.worker.schemas import Img2ImgRequest, Txt2ImgRequest
from distributed.worker.service import WorkerService

logger = logging.getLogger(__name__)


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    install_auth_handler(app)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for error in errors:
            location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
        fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in errors]
        return _error(422, "; ".join(parts), fields=fields, error="ValidationError")

    @app.exception_handler(RequestFieldError)
    async def refused(request: Request, exc: RequestFieldError) -> JSONResponse:
        logger.warning("%s refused: %s", request.url.path, exc)
        return _error(422, str(exc), fields=[exc.field], error="RequestFieldError")

    @app.exception_handler(ModelNotFoundError)
    async def missing(request: Request, exc: ModelNotFoundError) -> JSONResponse:
        return _error(404, str(exc), error="ModelNotFoundError", model=exc.name)


def _at_job_boundary(path: str, work: Callable[[], Any]) -> Any:
    """Run one job; a crash inside it becomes a 500 naming the cause, and the worker keeps serving."""
    try:
        return work()
    except (RequestFieldError, ModelNotFoundError):
        raise
    except Exception as exc:
        logger.exception("%s failed", path)
        return _error(500, f"{type(exc).__name__}: {exc}", error=type(exc).__name__)


async def _empty_listing() -> list[Any]:
    return []


class PngInfoRequest(BaseModel):
    image: str = ""


def create_app(service: WorkerService, api_auth: str | None = None, max_body: int = DEFAULT_MAX_BODY) -> FastAPI:
    app = FastAPI(title="distributed headless worker", version=__version__)
    app.add_middleware(BodyLimit, limit=max_body)
    _install_error_handlers(app)
    auth = Depends(auth_dependency(parse_api_auth(api_auth)))
    started = time.time()

    @app.get("/internal/ping")
    async def ping() -> dict[str, Any]:
        return {}

    @app.post("/sdapi/v1/txt2img", dependencies=[auth])
    def txt2img(request: Txt2ImgRequest) -> Any:
        return _at_job_boundary("txt2img", lambda: service.generate(request, "txt2img"))

    @app.post("/sdapi/v1/img2img", dependencies=[auth])
    def img2img(request: Img2ImgRequest) -> Any:
        return _at_job_boundary("img2img", lambda: service.generate(request, "img2img"))

    @app.get("/sdapi/v1/progress", dependencies=[auth])
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return service.state.progress(queued=max(0, service.queue.waiting - 1))

    @app.post("/sdapi/v1/interrupt", dependencies=[auth])
    async def interrupt() -> dict[str, Any]:
        service.state.interrupt()
        return {}

    @app.post("/sdapi/v1/skip", dependencies=[auth])
    async def skip() -> dict[str, Any]:
        service.state.skip()
        return {}

    @app.get("/sdapi/v1/sd-models", dependencies=[auth])
    def sd_models() -> list[dict[str, Any]]:
        return service.sd_models()

    @app.get("/sdapi/v1/sd-vae", dependencies=[auth])
    def sd_vae() -> list[dict[str, str]]:
        return service.sd_vaes()

    @app.get("/sdapi/v1/upscalers", dependencies=[auth])
    async def upscalers() -> list[dict[str, Any]]:
        return upscaler_listing()

    @app.get("/sdapi/v1/latent-upscale-modes", dependencies=[auth])
    async def latent_upscale_modes() -> list[dict[str, Any]]:
        return [{"name": name} for name in LATENT_UPSCALERS]

    @app.get("/sdapi/v1/embeddings", dependencies=[auth])
    async def embeddings() -> dict[str, Any]:
        return {"loaded": {}, "skipped": {}}  # no textual-inversion embeddings on the headless worker

    for empty in ("face-restorers", "realesrgan-models", "prompt-styles", "hypernetworks"):  # none here
        app.add_api_route(f"/sdapi/v1/{empty}", _empty_listing, methods=["GET"], dependencies=[auth])

    @app.post("/sdapi/v1/extra-single-image", dependencies=[auth])
    def extras(request: ExtrasRequest) -> Any:
        return _at_job_boundary("extra-single-image", lambda: extra_single_image(request))

    @app.post("/sdapi/v1/png-info", dependencies=[auth])
    def pnginfo(request: PngInfoRequest) -> Any:
        return _at_job_boundary("png-info", lambda: png_info(request.image))

    @app.get("/sdapi/v1/loras", dependencies=[auth])
    def loras() -> list[dict[str, Any]]:
        return service.lora_listing()

    @app.post("/sdapi/v1/refresh-loras", dependencies=[auth])
    def refresh_loras() -> Any:
        service.refresh_loras()
        return None

    @app.get("/sdapi/v1/options", dependencies=[auth])
    async def get_options() -> dict[str, Any]:
        return service.options.as_dict()

    @app.post("/sdapi/v1/options", dependencies=[auth])
    def set_options(update: dict[str, Any]) -> Any:
        def apply() -> dict[str, Any]:
            service.set_options(update)
            return {}

        return _at_job_boundary("options", apply)

    @app.get("/sdapi/v1/samplers", dependencies=[auth])
    async def samplers() -> list[dict[str, Any]]:
        return sampler_listing()

    @app.get("/sdapi/v1/schedulers", dependencies=[auth])
    async def schedulers() -> list[dict[str, Any]]:
        return schedule_listing()

    @app.get("/sdapi/v1/script-info", dependencies=[auth])
    async def script_info() -> list[dict[str, Any]]:
        return []

    @app.get("/sdapi/v1/memory", dependencies=[auth])
    async def memory() -> dict[str, Any]:
        return _memory()

    @app.get("/sdapi/v1/cmd-flags", dependencies=[auth])
    async def cmd_flags() -> dict[str, Any]:
        return {"distributed_worker": True, "uptime_s": round(time.time() - started, 1)}

    @app.get("/distributed/v1/lanes", dependencies=[auth])
    async def lanes() -> dict[str, Any]:
        """The CFG lanes: devices, peer, mode and the split's measured speed-up per shape."""
        described: dict[str, Any] = (
            service.lanes.describe() if service.lanes is not None else {"devices": [service.device]}
        )
        return described

    return app


def _memory() -> dict[str, Any]:
    """/sdapi/v1/memory shaped like A1111's: ram in bytes, cuda when a GPU is present."""
    process = psutil.Process()
    total = psutil.virtual_memory().total
    used = process.memory_info().rss
    ram = {"free": total - used, "used": used, "total": total}
    cuda: dict[str, Any] = {"error": "no cuda device"}
    try:
        import torch

        if torch.cuda.is_available():
            free, total_gpu = torch.cuda.mem_get_info()
            cuda = {"system": {"free": free, "used": total_gpu - free, "total": total_gpu}}
    except (ImportError, RuntimeError) as exc:
        cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}
