"""`python -m distributed coordinator`: leases dataset chunks to trainer peers, serves their data, runs the hivemind
DHT's bootstrap peer and shows progress. Every route but `/` and `/status` needs the token when one is set."""

from __future__ import annotations

import argparse
import html
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from distributed.training.dataset import DatasetError, chunks, index, sample
from distributed.training.leases import LeaseBook, LeaseRefused

logger = logging.getLogger(__name__)


def add_coordinator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="a folder of name.png + name.txt pairs")
    parser.add_argument("--host", default="127.0.0.1", help="address for HTTP and the DHT (loopback by default)")
    parser.add_argument("--port", type=int, default=7950, help="HTTP port")
    parser.add_argument("--lease-s", type=float, default=30.0, help="how long a trainer holds a chunk unrenewed")
    parser.add_argument("--chunk-size", type=int, default=4, help="samples per chunk")
    parser.add_argument("--token-env", default=None, metavar="VAR", help="require the token in this variable")
    parser.add_argument("--db", type=Path, default=None, help="the lease database (default: DATASET/.leases.db)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class Coordinator:
    def __init__(self, dataset: Path, book: LeaseBook, token: str | None, dht_peers: list[str]) -> None:
        self.dataset = dataset
        self.book = book
        self.token = token
        self.dht_peers = dht_peers
        self._lock = threading.Lock()
        self.seen: dict[str, float] = {}  # peer -> last call
        self.peers_over_time: list[tuple[float, int]] = []
        self.started = time.time()

    def touch(self, peer: str) -> None:
        with self._lock:
            now = time.time()
            self.seen[peer] = now
            live = sum(1 for at in self.seen.values() if now - at < self.book.lease_s)
            self.peers_over_time.append((round(now - self.started, 2), live))


def create_app(coordinator: Coordinator) -> Any:
    app = FastAPI(title="distributed training coordinator")

    async def check_token(request: Request) -> None:
        if coordinator.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), coordinator.token.encode()):
            raise HTTPException(401, "a valid token is required (Authorization: Bearer ...)")

    auth = [Depends(check_token)]

    def refused(error: LeaseRefused) -> HTTPException:
        return HTTPException(409, str(error))

    @app.post("/v1/lease", dependencies=auth)
    def lease(body: dict[str, Any]) -> Any:
        peer = str(body.get("peer") or "?")
        coordinator.touch(peer)
        given = coordinator.book.lease(peer)
        return {"lease": None, "retry_s": 1.0} if given is None else {"lease": asdict(given)}

    @app.post("/v1/renew", dependencies=auth)
    def renew(body: dict[str, Any]) -> Any:
        try:
            return {"expires_in_s": coordinator.book.renew(str(body.get("lease_id")))}
        except LeaseRefused as error:
            raise refused(error) from None

    @app.post("/v1/data", dependencies=auth)
    def data(body: dict[str, Any]) -> Any:
        try:
            coordinator.book.renew(str(body.get("lease_id")))  # only a current lease gets the data
        except LeaseRefused as error:
            raise refused(error) from None
        try:
            return [sample(coordinator.dataset, str(name)) for name in body.get("samples") or []]
        except DatasetError as error:
            raise HTTPException(404, str(error)) from None

    @app.post("/v1/report", dependencies=auth)
    def report(body: dict[str, Any]) -> Any:
        coordinator.touch(str(body.get("peer") or "?"))
        try:
            epoch = coordinator.book.report(
                str(body.get("lease_id")), int(body.get("samples") or 0), float(body["loss"])
            )
        except LeaseRefused as error:
            raise refused(error) from None
        return {"epoch": epoch}

    @app.post("/v1/eval", dependencies=auth)
    def evaluation(body: dict[str, Any]) -> Any:
        """A fixed evaluation set (the first `count` samples), the same for every peer."""
        names = index(coordinator.dataset)[: int(body.get("count") or 0)]
        return [sample(coordinator.dataset, name) for name in names]

    @app.get("/v1/dht", dependencies=auth)
    def dht() -> Any:
        return {"initial_peers": coordinator.dht_peers}

    @app.get("/v1/losses", dependencies=auth)
    def losses() -> Any:
        return [
            {"at": at, "epoch": epoch, "peer": peer, "loss": loss}
            for at, epoch, peer, loss in coordinator.book.losses()
        ]

    @app.get("/status")
    def status() -> Any:
        progress = asdict(coordinator.book.progress())
        rate = progress["samples"] / max(1e-6, time.time() - coordinator.started)
        extra = {"lease_s": coordinator.book.lease_s, "samples_per_s": round(rate, 2)}
        return {**progress, **extra, "peers_over_time": coordinator.peers_over_time[-500:]}

    @app.get("/", response_class=HTMLResponse)
    def page() -> Any:
        p = coordinator.book.progress()
        rows = [
            ("Epoch", p.epoch),
            ("Chunks", f"{p.done} done, {p.leased} leased, {p.pending} pending of {p.chunks}"),
            ("Samples reported", f"{p.samples} ({p.samples / max(1e-6, time.time() - coordinator.started):.1f}/s)"),
            ("Reassigned after expiry", p.reassigned),
            ("Late or duplicate reports refused", p.refused),
            ("Last loss", "-" if p.loss is None else f"{p.loss:.4f}"),
            ("Peers holding chunks", ", ".join(p.peers) or "none"),
        ]
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
            f"<title>training coordinator</title></head><body><h1>Training</h1><table>{cells}</table></body></html>"
        )

    return app


def start_dht(host: str) -> tuple[Any, list[str]]:
    """The bootstrap peer: bound to `host` only, no NAT traversal, no relays."""
    import hivemind

    dht = hivemind.DHT(
        start=True,
        host_maddrs=[f"/ip4/{host}/tcp/0"],
        use_ipfs=False,
        auto_nat=False,
        nat_port_map=False,
        use_relay=False,
        use_auto_relay=False,
    )
    return dht, [str(m) for m in dht.get_visible_maddrs()]


def run_coordinator(args: argparse.Namespace) -> int:
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        raise SystemExit(f"--token-env {args.token_env}: the variable is not set")
    try:
        names = index(args.dataset)
    except DatasetError as exc:
        raise SystemExit(f"error: {exc}") from exc
    book = LeaseBook(args.db or args.dataset / ".leases.db", args.lease_s)
    book.load(chunks(names, max(1, args.chunk_size)))
    dht, peers = start_dht(args.host)
    logger.info("%d samples in %d chunks; DHT at %s", len(names), -(-len(names) // args.chunk_size), peers)
    coordinator = Coordinator(args.dataset, book, token, peers)
    try:
        uvicorn.run(create_app(coordinator), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        dht.shutdown()
        book.close()
    return 0
