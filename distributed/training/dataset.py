"""The fine-tuning folder layout (`name.png` with `name.txt`), its chunks, and a small synthetic dataset for demos."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


class DatasetError(ValueError):
    """The folder is not a usable dataset; the message names it and what is missing."""


def index(folder: Path) -> list[str]:
    """Every image with a caption beside it, sorted by name; images without a caption are named in the error."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        raise DatasetError(f"{folder}: no caption (.txt) for {', '.join(missing[:5])}")
    if not images:
        raise DatasetError(f"{folder}: no images with captions (name.png and name.txt)")
    return [p.name for p in images]


def chunks(names: list[str], size: int) -> list[list[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def sample(folder: Path, name: str) -> dict[str, Any]:
    """One sample for the wire: the image as base64 and its caption."""
    path = folder / name
    if path.parent != folder or not path.is_file():  # names come from the index only, never a path from outside
        raise DatasetError(f"{name}: not in the dataset")
    caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
    return {"name": name, "image": base64.b64encode(path.read_bytes()).decode("ascii"), "caption": caption}


def make_synthetic(folder: Path, count: int = 48, size: int = 64, seed: int = 0) -> list[str]:
    """Coloured shapes on grey with captions saying which ("a red circle"): a pattern the tiny model can learn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for number in range(count):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        margin = rng.randint(4, size // 4)
        box = (margin, margin, size - margin, size - margin)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
        stem = f"{number:04d}"
        image.save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"a {colour} {shape}", encoding="utf-8")
    return index(folder)
