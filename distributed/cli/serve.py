"""`python -m distributed serve`: one A1111 address for the whole fleet, shared by many clients."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from distributed.errors import DistributedError

logger = logging.getLogger(__name__)
AUTH_ENV = "DISTRIBUTED_SERVE_API_AUTH"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (A1111's own default)")
    parser.add_argument("--config", type=Path, default=None, help="workers.json with the fleet (and learned speeds)")
    parser.add_argument("--remote", action="append", default=[], metavar="NAME=URL", help="a worker (repeatable)")
    parser.add_argument(
        "--api-auth", default=None, metavar="USER:PASS[,USER:PASS]", help=f"require HTTP Basic (or set {AUTH_ENV})"
    )
    parser.add_argument("--max-queue", type=int, default=16, help="jobs held at once; one more is answered 503")
    parser.add_argument(
        "--slice-s",
        type=float,
        default=1.0,
        help="longest predicted time of one chunk on a worker: how long a new job waits for the worker it wants",
    )
    parser.add_argument("--skip-verify", action="store_true", help="do not verify https workers' certificates")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from distributed.cli.generate import build_fleet_config
    from distributed.cli.speedcache import remember_speeds, with_cached_speeds
    from distributed.engine.config import parse_api_auth
    from distributed.engine.fleet import Fleet
    from distributed.gateway.app import Gateway, create_app
    from distributed.gateway.catalog import Catalog
    from distributed.gateway.queue import JobQueue

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_auth = args.api_auth or os.environ.get(AUTH_ENV)
    try:
        parse_api_auth(api_auth)
        if args.max_queue < 1:
            raise ValueError("--max-queue must be at least 1")
        if args.slice_s <= 0:
            raise ValueError("--slice-s must be a positive number of seconds")
        config = with_cached_speeds(build_fleet_config(args.config, args.remote))
    except (ValueError, DistributedError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    fleet = Fleet(config, verify_tls_default=not args.skip_verify)
    gateway = Gateway(fleet, JobQueue(fleet, args.max_queue, args.slice_s), Catalog(fleet), api_auth=api_auth)
    names = ", ".join(m.name for m in fleet)
    logger.info("serving the fleet (%s) as one A1111 API on http://%s:%d", names, args.host, args.port)
    try:
        uvicorn.run(create_app(gateway), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        gateway.close()
        remember_speeds(fleet)  # the next start plans with what this one learned
        fleet.close()
    return 0
