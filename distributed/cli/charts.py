"""A per-worker timeline of a job as a PNG, drawn with matplotlib (an optional extra: `pip install .[charts]`; the
webui's environment never imports this module)."""

from __future__ import annotations

from pathlib import Path

from distributed.engine.jobs import JobResult

COLOURS = ["#4c91d6", "#e68c3c", "#5ab46e", "#c8505a", "#966ec8", "#787878"]


def timeline_chart(result: JobResult, path: Path, ideal_s: float | None = None, title: str = "") -> None:
    """One row per worker; each block is one request (chunk), labelled with its number of images; the red line is
    the ideal time (every image spread over the fleet's summed speed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(result.workers)
    figure, axes = plt.subplots(figsize=(11, 1.4 + 0.55 * max(1, len(names))), dpi=100)
    try:
        for row, name in enumerate(names):
            colour = COLOURS[row % len(COLOURS)]
            spans = result.workers[name].spans
            axes.broken_barh([(start, end - start) for start, end, _ in spans], (row - 0.35, 0.7),
                             facecolors=colour, edgecolors="white", linewidth=1.5)  # fmt: skip
            for start, end, count in spans:
                axes.text((start + end) / 2, row, str(count), ha="center", va="center", color="white", fontsize=8)
        legend = [Patch(facecolor=COLOURS[0], label="one request; the number is its images")]
        if ideal_s:
            axes.axvline(ideal_s, color="#c80000", linewidth=2)
            legend.append(Patch(facecolor="#c80000", label=f"ideal {ideal_s:.1f} s"))
        axes.set_yticks(range(len(names)), names)
        axes.invert_yaxis()
        axes.set_xlim(0, max([result.wall_s, ideal_s or 0.0, 1e-3]) * 1.02)
        axes.set_xlabel("seconds since the job started")
        axes.set_ylabel("worker")
        axes.set_title(title or f"{len(result.requested)} images in {result.wall_s:.2f} s", fontsize=10)
        axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        axes.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
