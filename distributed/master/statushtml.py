"""The tab's live worker table and throughput chart as HTML: pure string building, every value escaped."""

from __future__ import annotations

import html
from collections import defaultdict

from distributed.master.views import StatusView, ThroughputPoint, WorkerView

STATE_CLASS = {
    "online": "ok",
    "not checked yet": "off",
    "busy": "busy",
    "offline": "bad",
    "auth refused": "bad",
    "model missing": "warn",
    "disabled": "off",
}
CHART_W, CHART_H = 560, 140


def _cell(text: object) -> str:
    return f"<td>{html.escape(str(text))}</td>"


def _state(worker: WorkerView) -> str:
    label = worker.state
    if worker.state == "busy" and worker.progress is not None:
        label += f" {worker.progress:.0%}"
    if worker.reason and worker.reason != worker.state and worker.state not in ("online", "busy"):
        label += f": {worker.reason}"
    css = STATE_CLASS.get(worker.state, "off")
    state = html.escape(worker.state)
    return (
        f'<td><span class="distributed-state distributed-{css}" data-state="{state}">{html.escape(label)}</span></td>'
    )


def _password_source(worker: WorkerView) -> str:
    if worker.auth is None:
        return "none"
    if worker.auth.password_env:
        return f"from ${worker.auth.password_env}"
    return "stored" if worker.auth.has_password else "none"


def workers_table(status: StatusView) -> str:
    if status.job is not None and status.job.running:
        job = f"<p class='distributed-job'>Job running: {status.job.done}/{status.job.total} images from the fleet</p>"
    else:
        job = ""
    rows = []
    for w in status.workers:
        speed = w.speed or "not measured"
        auth = "none" if w.auth is None else f"{w.auth.user} (password {_password_source(w)})"
        model = w.model or "unknown"
        rows.append(
            f'<tr data-worker="{html.escape(w.name)}">'
            + _cell(w.name)
            + _cell(w.url)
            + _state(w)
            + _cell(speed)
            + _cell(model)
            + _cell(auth)
            + _cell(w.source)
            + _cell(w.last_error or "")
            + "</tr>"
        )
    master = status.master_speed or "learned from its first job"
    head = "".join(f"<th>{h}</th>" for h in ("Worker", "URL", "State", "Speed", "Model", "Auth", "From", "Last error"))
    body = "".join(rows) or "<tr><td colspan='8'>No workers yet: add one below.</td></tr>"
    return (
        f"<div id='distributed_status_inner'>{job}<table class='distributed-table'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
        f"<p class='distributed-master'>This machine (master): {html.escape(master)}</p></div>"
    )


def throughput_chart(points: list[ThroughputPoint], last: int = 20) -> str:
    """Recent jobs' images per minute, one bar group per job, one colour per worker (an SVG)."""
    if not points:
        return "<p class='distributed-chart-empty'>The throughput chart fills in as jobs run.</p>"
    jobs: dict[float, dict[str, float]] = defaultdict(dict)
    for point in points:
        jobs[round(point.when, 0)][point.worker] = point.ipm
    recent = sorted(jobs.items())[-last:]
    workers = sorted({name for _, by_worker in recent for name in by_worker})
    top = max(ipm for _, by_worker in recent for ipm in by_worker.values()) or 1.0
    group_w = CHART_W / len(recent)
    bar_w = max(2.0, (group_w - 4) / len(workers))
    bars = []
    for g, (_, by_worker) in enumerate(recent):
        for k, name in enumerate(workers):
            ipm = by_worker.get(name)
            if ipm is None:
                continue
            height = (CHART_H - 20) * ipm / top
            x = g * group_w + k * bar_w
            bars.append(
                f'<rect class="distributed-bar-{workers.index(name) % 8}" x="{x:.1f}" y="{CHART_H - height:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{height:.1f}">'
                f"<title>{html.escape(name)}: {ipm:.1f} ipm</title></rect>"
            )
    legend = " ".join(
        f'<span class="distributed-legend distributed-bar-{i % 8}">{html.escape(name)}</span>'
        for i, name in enumerate(workers)
    )
    return (
        f'<svg class="distributed-chart" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" '
        f'role="img" aria-label="images per minute per worker, last {len(recent)} jobs">{"".join(bars)}</svg>'
        f"<div>{legend} <small>images/min in each of the last jobs, at that job's size (peak {top:.1f})</small></div>"
    )
