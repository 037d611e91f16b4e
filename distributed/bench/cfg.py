"""`python -m distributed bench-cfg`: one image on one lane, two local lanes and a peer pair, per step, real compute.

Four headless workers on the tiny model, one torch thread each, no emulation: one lane (`--devices cpu`), two local
lanes (`--devices cpu,cpu --cfg-parallel on`), and a peer pair (`--cfg-peer` to a worker started with `--cfg-listen`).
Each renders the same 1-image request at each size (a warm-up first, then the fastest of `repeats`); the time per step
is the request's time over its steps. The pictures are compared: the two split variants must be byte-identical (both
make two batch-1 UNet calls per step), and each is compared with the one-lane picture (one batch-2 call).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.images import decode_image_bytes
from distributed.parallel.frames import SECRET_ENV

VARIANTS = ("one lane", "two local lanes", "peer pair")


@dataclass
class CfgRow:
    size: int
    steps: int
    ms_per_step: dict[str, float]  # by variant
    split_vs_one_max: int  # largest pixel difference, two local lanes against one lane (0-255)
    peer_vs_local_max: int  # largest pixel difference, peer pair against two local lanes (0: byte-identical)

    def speedup(self, variant: str) -> float:
        return self.ms_per_step["one lane"] / self.ms_per_step[variant]


def add_bench_cfg_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="64,128,256", help="image sides in pixels")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps per image")
    parser.add_argument("--repeats", type=int, default=2, help="timed requests per size and variant (fastest kept)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where cfg.md goes")


def _render(url: str, size: int, steps: int) -> tuple[float, bytes, str]:
    body = {"prompt": "a lighthouse", "negative_prompt": "blurry", "seed": 7, "width": size, "height": size}
    body |= {"steps": steps, "sampler_name": "Euler a", "cfg_scale": 7.0}
    started = time.perf_counter()
    answer = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=600)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    data = answer.json()
    infotext = json.loads(data["info"])["infotexts"][0]
    return elapsed, base64.b64decode(data["images"][0]), infotext


def _max_difference(a: bytes, b: bytes) -> int:
    from PIL import ImageChops

    diff = ImageChops.difference(decode_image_bytes(a).convert("RGB"), decode_image_bytes(b).convert("RGB"))
    extrema: Any = diff.getextrema()  # one (low, high) per band
    return int(max(high for _, high in extrema))


def measure(sizes: list[int], steps: int, repeats: int) -> list[CfgRow]:
    os.environ.setdefault(SECRET_ENV, secrets.token_hex(16))  # the peer pair's shared secret (inherited)
    listen = free_port()
    workers = {
        "one lane": LocalWorker("one", extra_args=["--devices", "cpu"]),
        "two local lanes": LocalWorker("two", extra_args=["--devices", "cpu,cpu", "--cfg-parallel", "on"]),
        "listener": LocalWorker("listener", extra_args=["--cfg-listen", str(listen)]),
    }
    for worker in workers.values():
        worker.launch()
    try:
        for worker in workers.values():
            worker.wait_ready(120)
        peer = ["--cfg-peer", f"127.0.0.1:{listen}", "--cfg-parallel", "on"]
        workers["peer pair"] = LocalWorker("peer", extra_args=peer).start(120)
        rows = []
        for size in sizes:
            times: dict[str, float] = {}
            pictures: dict[str, bytes] = {}
            for variant in VARIANTS:
                url = workers[variant].url
                _render(url, size, 1)  # warm-up (and, for the pair, the connection)
                best = float("inf")
                for _ in range(repeats):
                    elapsed, png, infotext = _render(url, size, steps)
                    best = min(best, elapsed)
                    if variant != "one lane" and "CFG split: " not in infotext:
                        raise RuntimeError(f"{variant} did not split: {infotext}")
                times[variant] = 1000 * best / steps
                pictures[variant] = png
            one, two, pair = (pictures[v] for v in VARIANTS)
            rows.append(CfgRow(size, steps, times, _max_difference(two, one), _max_difference(pair, two)))
            print(f"  {size}x{size}: " + ", ".join(f"{v} {t:.1f} ms/step" for v, t in times.items()), flush=True)
        return rows
    finally:
        for worker in workers.values():
            worker.stop()


def table(rows: list[CfgRow]) -> list[str]:
    head = "| size | steps | one lane (ms/step) | two local lanes | speed-up | peer pair | speed-up "
    head += "| two lanes vs one lane, max diff | peer vs two lanes, max diff |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r.ms_per_step
        lines.append(
            f"| {r.size}x{r.size} | {r.steps} | {ms['one lane']:.1f} | {ms['two local lanes']:.1f} | "
            f"{r.speedup('two local lanes'):.2f}x | {ms['peer pair']:.1f} | {r.speedup('peer pair'):.2f}x | "
            f"{r.split_vs_one_max}/255 | {r.peer_vs_local_max}/255 |"
        )
    return lines


def run_bench_cfg(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"CFG split on {os.cpu_count()} CPUs, one torch thread per lane: starting four workers", flush=True)
    rows = measure(sizes, args.steps, args.repeats)
    lines = ["# The CFG split on this machine", "", *_method(), "", *table(rows), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cfg.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(table(rows)))
    for row in rows:
        print(
            f"ratio {row.size}x{row.size}: two local lanes {row.speedup('two local lanes'):.2f}x, "
            f"peer pair {row.speedup('peer pair'):.2f}x faster per step than one lane"
        )
    print(f"written to {args.out / 'cfg.md'}")
    return 0


def _method() -> list[str]:
    return [
        "`python -m distributed bench-cfg` starts four headless workers on the built-in tiny model, one torch",
        "thread each, no emulation: one lane (`--devices cpu`), two local lanes (`--devices cpu,cpu --cfg-parallel",
        "on`), and a peer pair (a worker with `--cfg-peer` to one with `--cfg-listen`, the secret in",
        "DISTRIBUTED_CFG_SECRET). Each renders one image per size (Euler a, CFG 7, seed 7) after a warm-up; the",
        "fastest of the timed requests counts, and the time per step is the request's time over its steps (text",
        "encoder, VAE decode, PNG and HTTP included). A max difference of 0 means byte-identical pictures. The split",
        "makes two batch-1 UNet calls where one lane makes one batch-2 call, so the split's picture may differ from",
        "one lane's by a level; both split variants do the same calls and must agree exactly.",
    ]
