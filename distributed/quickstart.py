"""`python -m distributed render`: start a local tiny worker and render a few images into a folder.

The first thing to run on a fresh machine: it proves the worker, the model and the image path end to end.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path

import requests

from distributed.images import contact_sheet, decode_base64_image, png_parameters
from distributed.localfleet import LocalWorker


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
        response = requests.post(f"{worker.url}/sdapi/v1/txt2img", json=payload, timeout=(5, 600))
        response.raise_for_status()
        body = response.json()
    info = json.loads(body["info"])
    images = []
    for index, (encoded, seed) in enumerate(zip(body["images"], info["all_seeds"], strict=False)):
        path = args.out / f"{index:05d}-{seed}.png"
        path.write_bytes(base64.b64decode(encoded))
        image = decode_base64_image(encoded)
        images.append(image)
        text = png_parameters(image) or ""
        print(f"{path}  {text.splitlines()[-1] if text else ''}")
    contact_sheet(images).save(args.out / "contact-sheet.png")
    print(
        f"worker ready in {ready:.1f} s; {len(body['images'])} images in {time.monotonic() - started:.1f} s "
        f"written to {args.out}/"
    )
    return 0
