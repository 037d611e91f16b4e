"""The CLI's live display: failures shown in full on a narrow terminal and on a pipe, never breaking the job."""

from __future__ import annotations

import io

from rich.console import Console

from distributed.cli.display import LiveBars
from distributed.engine.jobstate import ProgressEvent

REASON = "worker 'far': GET http://10.0.0.9:7860/sdapi/v1/progress: no answer within 3 s " + "x" * 120


def _events() -> list[ProgressEvent]:
    return [
        ProgressEvent("far", "started", 0, 4, detail="images 0-1"),
        ProgressEvent("far", "progress", 0, 4, step=2, steps=4, eta_s=1.0),
        ProgressEvent("far", "failed", 0, 4, detail=REASON),
        ProgressEvent("near", "done", 4, 4, worker_done=4),
    ]


def test_a_narrow_terminal_gets_the_whole_failure_above_the_bars() -> None:
    buffer = io.StringIO()
    bars = LiveBars(["far", "near"], 4, buffer, Console(file=buffer, force_terminal=True, width=40))
    for event in _events():
        bars(event)
    bars.close()
    text = "".join(buffer.getvalue().split())  # wrapped to 40 columns: compare without the line breaks
    assert "".join(REASON.split()) in text


def test_a_pipe_gets_one_plain_line_per_event_with_the_whole_reason() -> None:
    buffer = io.StringIO()
    bars = LiveBars(["far", "near"], 4, buffer)
    for event in _events():
        bars(event)
    bars.close()
    lines = buffer.getvalue().splitlines()
    assert any(line.endswith(f"far: failed: {REASON}") for line in lines), lines
    assert any(line.endswith("near: 4 images") for line in lines)
    assert "\x1b[" not in buffer.getvalue()  # no cursor movement on a pipe
