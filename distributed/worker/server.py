"""Starting a headless worker: build the service, load the model, serve HTTP with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from distributed.worker.checkpoints import TINY, CheckpointLoadError, CheckpointRegistry, ModelNotFoundError

logger = logging.getLogger(__name__)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7861, help="port to listen on (default 7861)")
    parser.add_argument(
        "--model",
        default=TINY,
        help="'tiny' (built-in test model), a checkpoint file or diffusers folder, "
        "or the name of a checkpoint in --models-dir (default tiny)",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="a folder in A1111's layout: Stable-diffusion/, VAE/, Lora/"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--emulate-ipm",
        type=float,
        default=None,
        metavar="X",
        help="EMULATION for tests/benchmarks: each image takes at least 60/X s at 64x64, 4 steps, "
        "scaled by width x height x steps",
    )
    parser.add_argument(
        "--api-auth",
        default=None,
        metavar="USER:PASS[,USER:PASS]",
        help="HTTP basic auth on every /sdapi route, as A1111's flag (or DISTRIBUTED_WORKER_API_AUTH)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    parser.add_argument(
        "--devices",
        default=None,
        metavar="DEV[,DEV]",
        help="two lanes for the CFG split (cuda:0,cuda:1 or cpu,cpu); the first is the worker's device",
    )
    parser.add_argument(
        "--cfg-parallel",
        default="auto",
        choices=["auto", "on", "off"],
        help="split guidance across the lanes: auto where measured faster, on always, off never",
    )
    parser.add_argument(
        "--cfg-peer", default=None, metavar="HOST:PORT", help="a worker started with --cfg-listen as the second lane"
    )
    parser.add_argument(
        "--cfg-listen",
        type=int,
        default=None,
        metavar="PORT",
        help="serve as another worker's second lane (secret: DISTRIBUTED_CFG_SECRET)",
    )
    parser.add_argument("--max-pixels", type=int, default=2048 * 2048, help="largest width x height accepted")
    parser.add_argument("--max-body-mb", type=int, default=64, help="largest request body accepted, in MiB")
    parser.add_argument("--tls-certfile", type=Path, default=None, help="serve https with this certificate (PEM)")
    parser.add_argument("--tls-keyfile", type=Path, default=None, help="the certificate's private key (PEM)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_worker(args: argparse.Namespace) -> int:
    # Imported here so `python -m distributed --help` stays fast and works without the worker extra.
    import torch
    import uvicorn

    from distributed.engine.config import parse_api_auth
    from distributed.worker.app import create_app
    from distributed.worker.lanes import CfgLanes, LaneSettings
    from distributed.worker.service import WorkerService

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.emulate_ipm is not None and args.emulate_ipm <= 0:
        raise SystemExit("--emulate-ipm must be a positive number of images per minute")
    if args.threads:
        torch.set_num_threads(args.threads)
    api_auth = args.api_auth or os.environ.get("DISTRIBUTED_WORKER_API_AUTH")
    try:
        parse_api_auth(api_auth)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    extra = []
    model = args.model
    if model != TINY and Path(model).exists():
        extra.append(Path(model))
        model = str(Path(model).absolute())  # not resolve(): a symlinked checkpoint keeps its own sibling yaml
    registry = CheckpointRegistry(args.models_dir, extra)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else [_device(args.device)]
    if len(devices) > 2:
        raise SystemExit("--devices takes one or two devices")
    if len(devices) == 2 and args.cfg_peer:
        raise SystemExit("--devices with two devices and --cfg-peer both give a second lane: choose one")
    lanes = CfgLanes(LaneSettings(devices, args.cfg_peer, args.cfg_parallel, args.cfg_listen, args.host))
    try:
        service = WorkerService(
            registry, model, emulate_ipm=args.emulate_ipm, max_pixels=args.max_pixels, device=devices[0], lanes=lanes
        )
        service.load_initial()
        lanes.listen(service.current_components())
    except (ModelNotFoundError, CheckpointLoadError) as exc:
        raise SystemExit(f"cannot start the worker: {exc}") from exc
    except OSError as exc:
        raise SystemExit(f"cannot listen for a CFG peer on port {args.cfg_listen}: {exc}") from exc
    app = create_app(service, api_auth, max_body=args.max_body_mb * 1024 * 1024)
    logger.info("model %s loaded; serving on http://%s:%d", service.options.sd_model_checkpoint, args.host, args.port)
    if bool(args.tls_certfile) != bool(args.tls_keyfile):
        raise SystemExit("--tls-certfile and --tls-keyfile go together")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        ssl_certfile=str(args.tls_certfile) if args.tls_certfile else None,
        ssl_keyfile=str(args.tls_keyfile) if args.tls_keyfile else None,
    )
    return 0
