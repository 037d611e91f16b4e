"""The gateway's status page at `/`: workers and the jobs running now, every value escaped; it reloads itself."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.online{color:#176c2b}.busy{color:#1f4e9c}"
    ".bad{color:#a31515}"
)
SPEED = "Images/min at 512x512, 20 steps"
GOOD = {"online": "online", "busy": "busy", "not checked yet": "online"}


def _row(cells: Sequence[object], css: str = "") -> str:
    attr = f' class="{css}"' if css else ""
    return f"<tr{attr}>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in cells) + "</tr>"


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"


def _state(worker: dict[str, Any]) -> str:
    return str(worker["state"]) + (f": {worker['reason']}" if worker["reason"] else "")


def status_page(workers: list[dict[str, Any]], jobs: list[dict[str, Any]], finished: int) -> str:
    worker_rows = "".join(
        _row(
            [
                w["name"],
                w["url"],
                w["state"] + (f": {w['reason']}" if w["reason"] else ""),
                w["images_per_minute_512px_20_steps"],
                w["job"],
            ],
            GOOD.get(w["state"], "bad"),
        )
        for w in workers
    )
    job_rows = "".join(
        _row([j["id"], j["kind"], f"{j['done']}/{j['images']}", ", ".join(j["workers"]), j["running_s"], j["eta_s"]])
        for j in jobs
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
        f"<title>distributed serve</title><style>{STYLE}</style></head><body><h1>distributed serve</h1>"
        f"<h2>Workers</h2><table>{_head('Worker', 'URL', 'State', SPEED, 'Job')}{worker_rows}</table>"
        f"<h2>Jobs ({len(jobs)} running, {finished} finished)</h2>"
        f"<table>{_head('Job', 'Kind', 'Images', 'Workers', 'Running (s)', 'ETA (s)')}{job_rows}</table>"
        "</body></html>"
    )
