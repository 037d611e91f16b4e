"""Terminal output for the CLI, with rich: a live bar per worker while a job runs, and a summary table after.

On a terminal, rich redraws the bars and prints each failure above them in full (wrapped to the terminal's width,
so nothing is left behind on a redraw). Elsewhere (a pipe, a log file) each finished or failed chunk is one plain
line with the whole reason.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from distributed.engine.dispatcher import ProgressEvent
from distributed.engine.jobs import JobResult


class LiveBars:
    """A rich Progress: one bar per worker (the steps of its current chunk) and one for the whole job."""

    def __init__(
        self, workers: list[str], total: int, stream: TextIO = sys.stderr, console: Console | None = None
    ) -> None:
        self.total = total
        self.stream = stream
        self.console = console or Console(file=stream)
        self.live = self.console.is_terminal
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.fields[name]:>14}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[images]:>4} images"),
            TextColumn("{task.fields[state]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            TimeElapsedColumn(),
            console=self.console,
            refresh_per_second=4,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}
        for name in workers:
            self._task(name)
        self.job = self.progress.add_task("", total=total, name="total", images=0, state="")
        if self.live:
            self.progress.start()

    def _task(self, name: str) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task("", total=1, name=name, images=0, state="waiting")
        return self.tasks[name]

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            task = self._task(event.worker)
            if event.kind == "progress":
                eta = f", eta {event.eta_s:.1f} s" if event.eta_s is not None else ""
                self.progress.update(task, total=max(1, event.steps), completed=event.step, state=f"rendering{eta}")
            elif event.kind == "started":
                self.progress.update(task, completed=0, state=f"rendering {event.detail}")
            elif event.kind == "done":
                self.progress.update(task, completed=self.progress.tasks[task].total, images=event.worker_done,
                                     state="idle")  # fmt: skip
            elif event.kind == "failed":
                self.progress.update(task, state="failed (see above)" if self.live else "failed")
            elif event.kind == "state":
                self.progress.update(task, state=event.detail)
            self.progress.update(self.job, completed=event.done, images=event.done)
            if event.kind in ("done", "failed", "state"):
                self._line(event)

    def _line(self, event: ProgressEvent) -> None:
        elapsed = time.monotonic() - self._started
        what = {"done": f"{event.worker_done} images", "failed": f"failed: {event.detail}", "state": event.detail}
        text = f"[{elapsed:6.1f}s] {event.done}/{self.total}  {event.worker}: {what[event.kind]}"
        if self.live:
            if event.kind != "done":
                self.console.print(text, markup=False, highlight=False)  # above the bars, wrapped, in full
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.live:
            self.progress.stop()


def summary_table(result: JobResult, ideal_s: float | None = None) -> str:
    """Images, chunks, failures, busy time and speed per worker; then the wall time and, per worker that made no
    image, why."""
    table = Table(title=None, show_edge=False)
    for header in ("worker", "images", "chunks", "failed", "busy s", "images/min"):
        table.add_column(header, justify="left" if header == "worker" else "right")
    for name, stats in result.workers.items():
        rate = f"{60 * stats.images / stats.busy_s:.1f}" if stats.busy_s > 0 else "-"
        table.add_row(name, str(stats.images), str(stats.chunks), str(stats.failed_chunks), f"{stats.busy_s:.1f}", rate)
    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None, force_terminal=False).print(table)
    lines = [buffer.getvalue().rstrip("\n")]
    total = f"{len(result.requested)} images in {result.wall_s:.2f} s"
    if ideal_s:
        total += f" (ideal {ideal_s:.2f} s, {result.wall_s / ideal_s:.2f}x)"
    lines.append(total)
    for failure in result.failures:
        lines.append(f"  re-queued: {failure}")
    for name, stats in result.workers.items():
        if stats.images == 0:
            failed = next((f for f in reversed(result.failures) if f.startswith(f"worker '{name}'")), None)
            why = result.excluded.get(name) or failed or "the plan gave it no images (others finish them sooner)"
            lines.append(f"  {name} made no images: {why}")
    return "\n".join(lines)
