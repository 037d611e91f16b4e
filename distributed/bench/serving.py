"""Many clients through `serve`: the gateway in this process over a bench fleet, driven by plain A1111 requests.

K clients each send an M-image txt2img at once; the total is compared with the ideal (K x M images over the fleet's
summed rates) and each client's latency with one M-image request alone on the idle fleet. A last case sends a
1-image request a few seconds into a 96-image one: its latency against the same request alone.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from distributed.bench.fleets import PAYLOAD, LocalFleet
from distributed.worker.threaded import ThreadServer

CASES = ((1, 24), (2, 12), (4, 12), (10, 4))  # (clients, images each)
LATENCY = (1, 96, 3.0)  # a 1-image request sent 3 s into a 96-image one
TIMEOUT = (5.0, 300.0)  # connect, read


@dataclass
class ServeRow:
    clients: int
    images: int  # per client
    ideal_s: float  # all clients' images over the summed standalone rates
    total_s: float  # first request sent to last answer
    alone_s: float  # one such request alone on the idle fleet, just before
    latencies_s: list[float] = field(default_factory=list)  # each client's, send to answer
    mismatches: int = 0  # answers without exactly the asked images and seeds
    during: int = 0  # the latency case: images of the job already running when these were sent
    during_s: float = 0.0  # the latency case: how long after that job these were sent

    @property
    def worst_latency(self) -> float:
        return max(self.latencies_s) / self.alone_s

    @property
    def mean_latency(self) -> float:
        return sum(self.latencies_s) / len(self.latencies_s) / self.alone_s


class _Clients:
    """A1111 requests to one gateway, each checked for its images and seeds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.mismatches = 0
        self._seeds = iter(range(10_000, 10**9, 10_000))  # every request its own seeds
        self._lock = threading.Lock()

    def send(self, images: int) -> float:
        """One txt2img request of `images` images; its latency."""
        with self._lock:
            base = next(self._seeds)
        body = {**PAYLOAD, "batch_size": images, "seed": base}
        started = time.monotonic()
        response = requests.post(f"{self.url}/sdapi/v1/txt2img", json=body, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        if not _exact(response, images, base):
            with self._lock:
                self.mismatches += 1
        return elapsed

    def together(self, clients: int, images: int) -> tuple[float, list[float]]:
        """`clients` requests at once; the total and each latency."""
        gate = threading.Barrier(clients)

        def one(_: int) -> float:
            gate.wait(30)
            return self.send(images)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            latencies = list(pool.map(one, range(clients)))
        return time.monotonic() - started, latencies


def _exact(response: requests.Response, images: int, base: int) -> bool:
    if response.status_code != 200:
        return False
    answer = response.json()
    seeds = json.loads(answer.get("info") or "{}").get("all_seeds")
    return len(answer.get("images") or []) == images and seeds == list(range(base, base + images))


def serving_rows(local: LocalFleet, slice_s: float = 1.0, max_queue: int = 16) -> list[ServeRow]:
    """Every case of CASES, then the latency case, on the gateway over the fleet's calibrated workers."""
    from distributed.gateway.app import Gateway, create_app
    from distributed.gateway.catalog import Catalog
    from distributed.gateway.queue import JobQueue

    fleet = local.fleet()
    gateway = Gateway(fleet, JobQueue(fleet, max_queue, slice_s), Catalog(fleet))
    rows = []
    try:
        with ThreadServer(create_app(gateway)) as server:
            clients = _Clients(server.url)
            clients.send(1)  # the first request pays for connections and admission calls
            clients.mismatches = 0
            for count, images in CASES:
                before = clients.mismatches
                alone = clients.send(images)
                total, latencies = clients.together(count, images)
                rows.append(ServeRow(count, images, local.ideal(count * images), total, alone, latencies))
                rows[-1].mismatches = clients.mismatches - before
            rows.append(_latency_case(local, clients))
    finally:
        gateway.close()
        fleet.close()
    return rows


def _latency_case(local: LocalFleet, clients: _Clients) -> ServeRow:
    small, big, after_s = LATENCY
    before = clients.mismatches
    alone = clients.send(small)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        running = pool.submit(clients.send, big)
        threading.Event().wait(after_s)  # a fixed delay into the big job, not a poll
        sent = time.monotonic() - started
        latency = clients.send(small)
        running.result()
    row = ServeRow(1, small, local.ideal(small), latency, alone, [latency], during=big, during_s=sent)
    row.mismatches = clients.mismatches - before
    return row
