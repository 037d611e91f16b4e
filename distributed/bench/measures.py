"""The benchmark's measurements, each returning plain numbers measured in this run."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from distributed.bench.fleets import LocalFleet, equal_shares, proportional_shares, run_ours, run_static, spec
from distributed.cli.localfleet import LocalWorker
from distributed.compat import validate
from distributed.engine.client import WorkerClient
from distributed.engine.config import Timeouts, WorkerConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job, ProgressEvent
from distributed.engine.jobs import JobSpec, check_response
from distributed.engine.scheduler import Chunk
from distributed.images import decode_image_bytes


@dataclass
class BatchRow:
    fleet: str
    shape: str
    images: int
    ideal_s: float
    ours_s: float
    alone_s: float
    equal_s: float
    static_s: float
    delivered: int


def batch_rows(local: LocalFleet, sizes: list[int]) -> list[BatchRow]:
    names = list(local.workers)
    fastest = max(names, key=local.rate)
    rows = []
    for images in sizes:
        result = run_ours(local, images)
        rows.append(
            BatchRow(
                fleet=local.shape.name,
                shape=local.shape.label,
                images=images,
                ideal_s=local.ideal(images),
                ours_s=result.wall_s,
                alone_s=run_static(local, {fastest: images}, images),
                equal_s=run_static(local, equal_shares(names, images), images),
                static_s=run_static(local, proportional_shares(local, images), images),
                delivered=len(result.requested),
            )
        )
    return rows


@dataclass
class KillRow:
    images: int
    killed: str
    killed_at_s: float
    done_at_kill: int
    makespan_s: float
    survivors_ideal_s: float
    delivered: int


def killed_worker(local: LocalFleet, images: int) -> KillRow:
    """Kill the fastest worker at 30% of the planned time; every image must still arrive."""
    names = list(local.workers)
    victim = max(names, key=local.rate)
    survivors = [n for n in names if n != victim]
    kill_after = 0.3 * local.ideal(images)
    done = {"count": 0}
    state: dict[str, float] = {}

    def watch(event: ProgressEvent) -> None:
        done["count"] = event.done

    def killer() -> None:
        if not stop.wait(kill_after):
            state["done"] = done["count"]
            state["at"] = time.monotonic() - started
            local.workers[victim].kill()

    stop = threading.Event()
    fleet = local.fleet()
    started = time.monotonic()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = Job(fleet, spec(images), on_event=watch).run()
    stop.set()
    thread.join(5)
    fleet.close()
    at, before = state.get("at", result.wall_s), int(state.get("done", images))
    remaining = images - before
    return KillRow(
        images, victim, at, before, result.wall_s, at + local.ideal(remaining, survivors), len(result.requested)
    )


EMULATED = "emulated (--emulate-ipm)"


@dataclass
class PredictionRow:
    change: str
    worker: str
    predicted_s: float
    actual_s: float
    compute: str = EMULATED  # or real compute (bench/realcompute.py)
    baseline_s: float | None = None  # what overhead + megapixel-steps alone predicted (the first cost model)

    @property
    def error(self) -> float:
        return abs(self.predicted_s - self.actual_s) / self.actual_s


def prediction_errors(local: LocalFleet, images: int = 4) -> list[PredictionRow]:
    """Models fitted at 64x64, 4 steps predict a resolution change and a steps change with no new benchmark."""
    changes = {"resolution 64->128": Workload(128, 128, 4), "steps 4->16": Workload(64, 64, 16)}
    fleet = local.fleet()
    rows = []
    for member in fleet:
        model = local.costs[member.name].copy()
        for change, workload in changes.items():
            payload = {
                **spec(images).payload,
                "width": workload.width,
                "height": workload.height,
                "steps": workload.steps,
                "batch_size": images,
                "seed": 5,
            }
            started = time.monotonic()
            member.client.generate("txt2img", payload, read_s=600)
            rows.append(PredictionRow(change, member.name, model.predict(images, workload), time.monotonic() - started))
    fleet.close()
    return rows


def master_cost_per_image(images: int = 8, rounds: int = 5) -> tuple[float, int]:
    """Receive, decode and merge 512x512 PNGs: a real worker's answer replayed over loopback, timed on the master."""
    with LocalWorker("bench-512", threads=2) as worker:
        payload = {**spec(images).payload, "width": 512, "height": 512, "steps": 1, "batch_size": images, "seed": 1}
        body = requests.post(f"{worker.url}/sdapi/v1/txt2img", json=payload, timeout=(5, 600)).content
    with _replay(body) as url:
        client = WorkerClient(validate(WorkerConfig, {"name": "replay", "url": url}), validate(Timeouts, {}))
        job_spec = spec(images, seed=1)
        chunk = Chunk("replay", 0, images)
        started = time.monotonic()
        for _ in range(rounds):
            response = client.generate("txt2img", job_spec.chunk_payload(chunk), read_s=60)
            merged = [decode_image_bytes(image.png) for image in check_response(job_spec, chunk, response, False)]
            assert len(merged) == images
        elapsed = time.monotonic() - started
        client.close()
    return elapsed / (rounds * images), len(body) // images


class _replay:
    """Serve one fixed JSON body to every POST, as fast as the loopback allows."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __enter__(self) -> str:
        body = self.body

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class InterruptRow:
    returned_s: float
    idle_s: dict[str, float]  # per worker: until its /progress shows no job


def interrupt_latency(local: LocalFleet) -> InterruptRow:
    fleet = local.fleet()
    busy: set[str] = set()
    all_busy = threading.Event()

    def watch(event: ProgressEvent) -> None:
        if event.kind == "progress" and event.step >= 1:
            busy.add(event.worker)
            if len(busy) == len(local.workers):
                all_busy.set()

    job = Job(fleet, _long_spec(), on_event=watch)
    ended: dict[str, float] = {}
    runner = threading.Thread(target=lambda: (job.run(), ended.setdefault("at", time.monotonic())), daemon=True)
    runner.start()
    if not all_busy.wait(60):
        raise RuntimeError("the workers never all got busy")
    asked = time.monotonic()
    job.interrupt()
    idle = {name: _until_idle(worker.url) - asked for name, worker in local.workers.items()}
    runner.join(10)
    fleet.close()
    return InterruptRow(ended.get("at", float("inf")) - asked, idle)


def _long_spec() -> JobSpec:
    long_job = spec(48)
    long_job.payload["steps"] = 16
    long_job.workload = Workload(64, 64, 16)
    return long_job


def _until_idle(url: str, limit_s: float = 10.0) -> float:
    end = time.monotonic() + limit_s
    pause = threading.Event()
    while time.monotonic() < end:
        progress = requests.get(f"{url}/sdapi/v1/progress", timeout=(2, 5)).json()
        if not progress["state"]["job_count"]:
            return time.monotonic()
        pause.wait(0.01)
    return float("inf")
