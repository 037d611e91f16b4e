"""`python -m distributed render`: start a local tiny worker and render a few images into a folder.

The first thing to run on a fresh machine: it proves the worker, the model and the image path end to end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distributed.cli.localfleet import LocalWorker
from distributed.compat import validate
from distributed.engine.client import WorkerClient
from distributed.engine.config import Timeouts, WorkerConfig
from distributed.images import contact_sheet, decode_image_bytes, png_parameters


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/render"), help="folder for the PNGs (default out/render)")
    parser.add_argument("--images", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--prompt", default="a lighthouse at dusk, oil painting")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--size", type=int, default=64, help="width and height (default 64)")
    parser.add_argument("--steps", type=int, default=4)


def run_render(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with LocalWorker("render", threads=None) as worker:
        ready = time.monotonic() - started
        payload = {
            "prompt": args.prompt,
            "seed": args.seed,
            "batch_size": args.images,
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
            "sampler_name": "Euler a",
            "cfg_scale": 7.0,
        }
        client = WorkerClient(validate(WorkerConfig, {"name": worker.name, "url": worker.url}), validate(Timeouts, {}))
        response = client.generate("txt2img", payload, read_s=600)
        client.close()
    images = []
    for index, (png, seed) in enumerate(zip(response.images, response.info["all_seeds"], strict=False)):
        path = args.out / f"{index:05d}-{seed}.png"
        path.write_bytes(png)
        image = decode_image_bytes(png)
        images.append(image)
        text = png_parameters(image) or ""
        print(f"{path}  {text.splitlines()[-1] if text else ''}")
    contact_sheet(images).save(args.out / "contact-sheet.png")
    print(
        f"worker ready in {ready:.1f} s; {len(images)} images in {time.monotonic() - started:.1f} s "
        f"written to {args.out}/"
    )
    return 0
