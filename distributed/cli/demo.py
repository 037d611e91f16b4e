"""`python -m distributed demo`: three local workers at emulated speeds 5:2:1 render 24 images as one fleet."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from distributed.cli.charts import timeline_chart
from distributed.cli.display import summary_table
from distributed.cli.generate import run_job, summary_json, write_images
from distributed.cli.localfleet import LocalWorker, start_all
from distributed.compat import validate
from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import Workload
from distributed.engine.jobs import JobSpec
from distributed.images import contact_sheet, decode_image_bytes

SPEEDS = {"fast": 60.0, "medium": 24.0, "slow": 12.0}  # images per minute at 64x64, 4 steps: 5:2:1


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the results (default out/demo)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1000)


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="distributed-demo-"))
    speeds = ", ".join(f"{name} {ipm:g} ipm" for name, ipm in SPEEDS.items())
    print(f"starting {len(SPEEDS)} local workers (emulated speeds: {speeds})")
    workers = [
        LocalWorker(name, emulate_ipm=ipm, threads=1, log_path=logs / f"{name}.log") for name, ipm in SPEEDS.items()
    ]
    try:
        start_all(workers)
        config = validate(FleetConfig, {"workers": [{"name": w.name, "url": w.url} for w in workers]})
        spec = JobSpec(
            kind="txt2img",
            payload={
                "prompt": "a lighthouse at dusk, oil painting",
                "width": 64,
                "height": 64,
                "steps": 4,
                "cfg_scale": 7.0,
                "sampler_name": "Euler a",
            },
            images=args.images,
            seed=args.seed,
            subseed=args.seed,
            workload=Workload(64, 64, 4),
        )
        started = time.monotonic()
        result, fleet = run_job(config, spec, verify_tls=True, show=True)
        fleet.close()
    finally:
        for worker in workers:
            worker.stop()
    ideal = args.images / sum(SPEEDS.values()) * 60
    write_images(result, args.out)
    labels = [f"#{i.index} seed {i.seed}\n{i.worker}" for i in result.requested]
    contact_sheet([decode_image_bytes(i.png) for i in result.requested], labels=labels).save(
        args.out / "contact-sheet.png"
    )
    try:
        timeline_chart(
            result,
            args.out / "timeline.png",
            ideal_s=ideal,
            title=f"{len(result.requested)} images on a 5:2:1 fleet: {result.wall_s:.2f} s, ideal {ideal:.2f} s",
        )
    except ImportError:
        print("timeline.png needs matplotlib: pip install 'sd-distributed[charts]'", file=sys.stderr)
    (args.out / "summary.json").write_text(json.dumps(summary_json(result), indent=2), encoding="utf-8")
    print(summary_table(result, ideal_s=ideal))
    print(
        f"wrote {len(result.requested)} images, contact-sheet.png and timeline.png to {args.out}/ "
        f"(job {result.wall_s:.2f} s, {time.monotonic() - started:.2f} s with merging)"
    )
    return 0 if len(result.requested) == args.images else 1
