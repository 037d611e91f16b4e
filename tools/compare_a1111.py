"""Render the same requests on a real A1111 and on a headless worker and print how far apart the images are.

    python tools/compare_a1111.py --a1111 http://127.0.0.1:7860 --worker http://127.0.0.1:7861 \
        --checkpoint tiny-sd.safetensors [--cases sampling|prompts|all] [--json out.json]

Both must have the checkpoint (same file); the worker should run with `--threads 1` and A1111 with
OMP_NUM_THREADS=1, since CPU results depend on the thread count. Prints one markdown row per case: mean and max
absolute difference per pixel channel (0-255). docs/a1111-equality.md says how the published table was made.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from typing import Any

import numpy as np
import requests
from PIL import Image, ImageDraw

TIMEOUT_S = 600


DEFAULTS = {
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "randn_source": "GPU",
    "emphasis": "Original",
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
}


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def init_image(size: int) -> str:
    """A fixed picture to start img2img from: gradients and a few shapes."""
    x = np.linspace(0, 255, size, dtype=np.float32)
    array = np.stack([np.add.outer(x, x) / 2, np.add.outer(x[::-1], x) / 2, np.full((size, size), 96.0)], axis=2)
    image = Image.fromarray(array.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=(220, 40, 40))
    return _png(image)


def mask_image(size: int) -> str:
    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).rectangle((size // 8, size // 4, size // 2, size * 3 // 4), fill=255)
    return _png(image)


def sampling_cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for sampler, scheduler in (
        ("Euler a", "Automatic"),
        ("Euler", "Automatic"),
        ("DPM++ 2M", "Karras"),
        ("DDIM", "Automatic"),
    ):
        for size in (64, 128):
            for steps in (4, 20):
                base = {
                    "sampler_name": sampler,
                    "scheduler": scheduler,
                    "width": size,
                    "height": size,
                    "steps": steps,
                    "seed": 1234,
                    "cfg_scale": 7,
                    "prompt": "a photo of a cat",
                    "negative_prompt": "blurry",
                }
                name = f"{sampler} {scheduler} {size}px {steps} steps"
                cases.append((f"txt2img {name}", "txt2img", base))
                cases.append(
                    (
                        f"img2img {name}",
                        "img2img",
                        {**base, "init_images": [init_image(size)], "denoising_strength": 0.6},
                    )
                )
    return cases


def prompt_cases() -> list[tuple[str, str, dict[str, Any]]]:
    base = {
        "sampler_name": "Euler a",
        "width": 64,
        "height": 64,
        "steps": 20,
        "seed": 77,
        "cfg_scale": 7,
        "negative_prompt": "blurry",
    }
    long_prompt = ", ".join(f"a {word} cat" for word in ("red", "blue", "tall", "small", "old", "young") * 6)
    return [
        ("plain prompt", "txt2img", {**base, "prompt": "a photo of a cat"}),
        ("emphasis (photo:1.5)", "txt2img", {**base, "prompt": "a (photo:1.5) of a [cat]"}),
        ("prompt editing [cat:house:0.5]", "txt2img", {**base, "prompt": "a photo of a [cat:house:0.5]"}),
        ("alternation [cat|dog]", "txt2img", {**base, "prompt": "a photo of a [cat|dog]"}),
        ("BREAK", "txt2img", {**base, "prompt": "a photo BREAK of a cat"}),
        ("long prompt (over 75 tokens)", "txt2img", {**base, "prompt": long_prompt}),
        (
            "clip skip 2",
            "txt2img",
            {**base, "prompt": "a photo of a cat", "override_settings": {"CLIP_stop_at_last_layers": 2}},
        ),
        ("LoRA", "txt2img", {**base, "prompt": "a photo of a cat <lora:tiny-prompt-lora:0.8>"}),
        (
            "hires fix, Latent",
            "txt2img",
            {
                **base,
                "prompt": "a photo of a cat",
                "enable_hr": True,
                "hr_scale": 2,
                "hr_upscaler": "Latent",
                "denoising_strength": 0.5,
                "hr_second_pass_steps": 6,
            },
        ),
        (
            "hires fix, Lanczos",
            "txt2img",
            {
                **base,
                "prompt": "a photo of a cat",
                "enable_hr": True,
                "hr_scale": 1.5,
                "hr_upscaler": "Lanczos",
                "denoising_strength": 0.5,
                "hr_prompt": "a photo of a dog",
            },
        ),
        (
            "inpainting, only masked",
            "img2img",
            {
                **base,
                "prompt": "a photo of a cat",
                "init_images": [init_image(64)],
                "mask": mask_image(64),
                "inpaint_full_res": True,
                "inpaint_full_res_padding": 8,
                "denoising_strength": 0.75,
            },
        ),
        (
            "inpainting, whole picture",
            "img2img",
            {
                **base,
                "prompt": "a photo of a cat",
                "init_images": [init_image(64)],
                "mask": mask_image(64),
                "inpaint_full_res": False,
                "denoising_strength": 0.75,
            },
        ),
    ]


def slug(name: str) -> str:
    """A case's file name: letters, digits and dashes."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def field_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """One case per honoured field or option that the sampling and prompt cases leave at its default."""
    base = {
        "sampler_name": "Euler a",
        "width": 64,
        "height": 64,
        "steps": 8,
        "seed": 31,
        "cfg_scale": 6,
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
    }
    img = {**base, "init_images": [init_image(64)], "denoising_strength": 0.7}
    wide = {**img, "init_images": [init_image(96)], "width": 64, "height": 48}
    inpaint = {**img, "mask": mask_image(64)}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (f"sampler {name}", "txt2img", {**base, "sampler_name": name})
        for name in ("LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a")
    ]
    cases += [
        ("Euler a, Exponential schedule", "txt2img", {**base, "scheduler": "Exponential"}),
        ("eta 0.5", "txt2img", {**base, "eta": 0.5}),
        ("DDIM eta 0.7", "txt2img", {**base, "sampler_name": "DDIM", "eta": 0.7}),
        (
            "s_churn, s_tmin, s_noise",
            "txt2img",
            {**base, "sampler_name": "Euler", "s_churn": 0.6, "s_tmin": 0.5, "s_noise": 0.95},
        ),
        (
            "churn from the options",
            "txt2img",
            {**base, "sampler_name": "Heun", "s_churn": 0.2, "override_settings": {"s_churn": 0.8}},
        ),
        ("ENSD 31337", "txt2img", {**base, "override_settings": {"eta_noise_seed_delta": 31337}}),
        ("randn_source CPU", "txt2img", {**base, "override_settings": {"randn_source": "CPU"}}),
        ("randn_source NV", "txt2img", {**base, "override_settings": {"randn_source": "NV"}}),
        (
            "emphasis No norm",
            "txt2img",
            {**base, "prompt": "a (photo:1.4) of a cat", "override_settings": {"emphasis": "No norm"}},
        ),
        ("s_min_uncond", "txt2img", {**base, "s_min_uncond": 2.0}),
        ("tiling", "txt2img", {**base, "tiling": True}),
        ("variation seed", "txt2img", {**base, "subseed": 99, "subseed_strength": 0.4}),
        ("batch of 2, second image", "txt2img", {**base, "batch_size": 2, "n_iter": 1, "seed": 30}),
        ("AND with weights", "txt2img", {**base, "prompt": "a photo of a cat AND a red house :0.6"}),
        ("negative emphasis", "txt2img", {**base, "negative_prompt": "(blurry:1.3), [dark]"}),
        (
            "hires resize 96x80, nearest latent",
            "txt2img",
            {
                **base,
                "enable_hr": True,
                "hr_resize_x": 96,
                "hr_resize_y": 80,
                "hr_upscaler": "Latent (nearest)",
                "denoising_strength": 0.6,
            },
        ),
        (
            "hires Nearest, other sampler",
            "txt2img",
            {
                **base,
                "enable_hr": True,
                "hr_scale": 1.5,
                "hr_upscaler": "Nearest",
                "denoising_strength": 0.4,
                "hr_sampler_name": "DPM++ 2M",
                "hr_scheduler": "Karras",
            },
        ),
        ("img2img initial_noise_multiplier", "img2img", {**img, "initial_noise_multiplier": 0.9}),
        ("img2img resize mode 1", "img2img", {**wide, "resize_mode": 1}),
        ("img2img resize mode 2", "img2img", {**wide, "resize_mode": 2}),
        ("img2img resize mode 3", "img2img", {**img, "init_images": [init_image(96)], "resize_mode": 3}),
        ("inpainting fill", "img2img", {**inpaint, "inpainting_fill": 0, "mask_blur": 2}),
        ("inpainting latent noise", "img2img", {**inpaint, "inpainting_fill": 2, "inpaint_full_res": False}),
        ("inpainting latent nothing", "img2img", {**inpaint, "inpainting_fill": 3, "mask_blur_x": 3, "mask_blur_y": 0}),
        ("inpainting inverted", "img2img", {**inpaint, "inpainting_mask_invert": 1, "inpainting_fill": 1}),
    ]
    return cases


def render(url: str, route: str, payload: dict[str, Any]) -> np.ndarray:
    response = requests.post(f"{url}/sdapi/v1/{route}", json=payload, timeout=TIMEOUT_S)
    if response.status_code != 200:
        raise RuntimeError(f"{url} {route}: HTTP {response.status_code}: {response.text[:300]}")
    images = response.json()["images"]
    image = Image.open(io.BytesIO(base64.b64decode(images[-1]))).convert("RGB")  # a batch: its last image
    return np.asarray(image).astype(np.int16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a1111", required=True, help="base URL of a real A1111 started with --api")
    parser.add_argument("--worker", required=True, help="base URL of a headless worker")
    parser.add_argument("--checkpoint", required=True, help="checkpoint title or file name both have")
    parser.add_argument("--cases", choices=("sampling", "prompts", "fields", "all"), default="sampling")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this text")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--save", help="also save A1111's images here as <case>.png (the tests' references)")
    args = parser.parse_args(argv)
    cases = []
    if args.cases in ("sampling", "all"):
        cases += sampling_cases()
    if args.cases in ("prompts", "all"):
        cases += prompt_cases()
    if args.cases in ("fields", "all"):
        cases += field_cases()
    # the checkpoint, and A1111's defaults for what the cases change; set once so that A1111 restores them after
    # each override (A1111 does not restore an option that was never set before)
    for url in (args.a1111, args.worker):
        options = {"sd_model_checkpoint": args.checkpoint, **DEFAULTS}
        requests.post(f"{url}/sdapi/v1/options", json=options, timeout=TIMEOUT_S).raise_for_status()
    results = []
    print("| case | mean abs diff (/255) | max abs diff (/255) |\n|---|---|---|")
    for name, route, case in cases:
        if args.only and args.only not in name:
            continue
        payload = {
            **case,
            "override_settings": {"sd_model_checkpoint": args.checkpoint, **case.get("override_settings", {})},
        }
        try:
            ours, theirs = render(args.worker, route, payload), render(args.a1111, route, payload)
        except (RuntimeError, requests.RequestException) as exc:
            print(f"| {name} | error: {exc} | |")
            results.append({"case": name, "error": str(exc)})
            continue
        if ours.shape != theirs.shape:
            print(f"| {name} | sizes differ: {ours.shape} vs {theirs.shape} | |")
            results.append({"case": name, "error": "sizes differ"})
            continue
        if args.save:
            Image.fromarray(theirs.astype(np.uint8)).save(f"{args.save}/{slug(name)}.png")
        diff = np.abs(ours - theirs)
        results.append({"case": name, "mean": float(diff.mean()), "max": int(diff.max())})
        print(f"| {name} | {diff.mean():.3f} | {int(diff.max())} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
