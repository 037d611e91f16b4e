"""Terminal output for the CLI: a live bar per worker while a job runs, and a summary table after."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from distributed.dispatcher import ProgressEvent
from distributed.jobs import JobResult

BAR_WIDTH = 24


@dataclass
class _Row:
    done: int = 0
    step: int = 0
    steps: int = 0
    state: str = "waiting"
    eta_s: float | None = None


class LiveBars:
    """Redraws one line per worker on a terminal; on a pipe, prints one line per finished or failed chunk."""

    def __init__(self, workers: list[str], total: int, stream: TextIO = sys.stderr) -> None:
        self.rows = {name: _Row() for name in workers}
        self.total = total
        self.stream = stream
        self.live = stream.isatty()
        self._lock = threading.Lock()
        self._drawn = 0
        self._started = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            row = self.rows.setdefault(event.worker, _Row())
            if event.kind == "progress":
                row.step, row.steps, row.eta_s = event.step, event.steps, event.eta_s
            elif event.kind == "started":
                row.state, row.step = "rendering", 0
            elif event.kind == "done":
                row.done, row.state = event.worker_done, "idle"
            elif event.kind == "failed":
                row.state = f"failed: {event.detail[:60]}"
            elif event.kind == "state":
                row.state = event.detail
            if self.live:
                self._redraw(event)
            elif event.kind in ("done", "failed", "state"):
                elapsed = time.monotonic() - self._started
                print(f"[{elapsed:6.1f}s] {event.done}/{self.total}  {event.worker}: {row.state}", file=self.stream)

    def _redraw(self, event: ProgressEvent) -> None:
        lines = []
        for name, row in self.rows.items():
            fraction = row.step / row.steps if row.steps else 0.0
            filled = int(BAR_WIDTH * fraction)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            eta = f" eta {row.eta_s:4.1f}s" if row.eta_s is not None and row.state == "rendering" else ""
            lines.append(f"{name:>12} [{bar}] {row.done:4d} images  {row.state}{eta}")
        lines.append(f"{'total':>12}  {event.done}/{self.total} images in {time.monotonic() - self._started:.1f} s")
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        self.stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)


def summary_table(result: JobResult, ideal_s: float | None = None) -> str:
    rows = [("worker", "images", "chunks", "failed", "busy s", "images/min")]
    for name, stats in result.workers.items():
        rate = f"{60 * stats.images / stats.busy_s:.1f}" if stats.busy_s > 0 else "-"
        rows.append((name, str(stats.images), str(stats.chunks), str(stats.failed_chunks), f"{stats.busy_s:.1f}", rate))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"{len(result.requested)} images in {result.wall_s:.2f} s")
    if ideal_s:
        lines[-1] += f" (ideal {ideal_s:.2f} s, {result.wall_s / ideal_s:.2f}x)"
    for failure in result.failures:
        lines.append(f"  re-queued: {failure}")
    for name, stats in result.workers.items():
        if stats.images == 0:
            failed = next((f for f in reversed(result.failures) if f.startswith(f"worker '{name}'")), None)
            why = result.excluded.get(name) or failed or "the plan gave it no images (others finish them sooner)"
            lines.append(f"  {name} made no images: {why}")
    return "\n".join(lines)
