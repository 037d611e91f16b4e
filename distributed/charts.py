"""A per-worker timeline of a job as a PNG, drawn with Pillow (no plotting library in the webui's env)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from distributed.jobs import JobResult

ROW_HEIGHT = 34
LEFT = 110
RIGHT = 30
TOP = 40
BOTTOM = 40
WIDTH = 900
COLOURS = [(76, 145, 214), (230, 140, 60), (90, 180, 110), (200, 80, 90), (150, 110, 200), (120, 120, 120)]


def timeline_chart(result: JobResult, path: Path, ideal_s: float | None = None, title: str = "") -> None:
    names = list(result.workers)
    height = TOP + BOTTOM + ROW_HEIGHT * max(1, len(names))
    image = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    span = max([result.wall_s, ideal_s or 0.0, 1e-3])
    scale = (WIDTH - LEFT - RIGHT) / span

    def x(seconds: float) -> float:
        return LEFT + seconds * scale

    draw.text((10, 10), title or f"{len(result.requested)} images in {result.wall_s:.2f} s", fill=(0, 0, 0))
    for row, name in enumerate(names):
        top = TOP + row * ROW_HEIGHT
        draw.text((10, top + 10), name[:14], fill=(0, 0, 0))
        colour = COLOURS[row % len(COLOURS)]
        for start, end, count in result.workers[name].spans:
            # a white seam between chunks, so each request shows as its own block
            draw.rectangle([x(start) + 1, top + 4, max(x(end) - 1, x(start) + 2), top + ROW_HEIGHT - 4], fill=colour)
            if x(end) - x(start) > 14:
                draw.text((x(start) + 3, top + 11), str(count), fill=(255, 255, 255))
    axis = TOP + ROW_HEIGHT * len(names) + 4
    draw.line([LEFT, axis, WIDTH - RIGHT, axis], fill=(0, 0, 0))
    step = _tick_step(span)
    seconds = 0.0
    while seconds <= span + 1e-9:
        draw.line([x(seconds), axis, x(seconds), axis + 4], fill=(0, 0, 0))
        draw.text((x(seconds) - 8, axis + 8), f"{seconds:g}s", fill=(0, 0, 0))
        seconds += step
    if ideal_s:
        draw.line([x(ideal_s), TOP - 6, x(ideal_s), axis], fill=(200, 0, 0), width=2)
        draw.text((x(ideal_s) - 80, TOP - 16), f"ideal {ideal_s:.1f}s", fill=(200, 0, 0))
    image.save(path)


def _tick_step(span: float) -> float:
    """A round tick interval giving five to ten ticks."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if span / step <= 10:
            return float(step)
    return span / 10
