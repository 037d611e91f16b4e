"""The master's lane: the hand-over between the dispatcher and the webui's loop, without HTTP or a webui."""

from __future__ import annotations

import threading

from distributed.engine.costmodel import CostModel
from distributed.engine.lane import Ask, LocalLane
from distributed.engine.scheduler import Chunk


def test_offer_ask_done_and_finish() -> None:
    pokes: list[int] = []
    lane = LocalLane(CostModel(0.0, 1.0), max_batch=4)
    lane.attach(lambda: pokes.append(1))
    assert lane.ask(0.01) is Ask.WAIT  # nothing offered yet: the loop hears WAIT, it does not block for long
    chunk = Chunk("master", 4, 2)
    lane.offer(chunk)
    assert lane.current is not None and lane.current[0] == chunk  # offered counts as busy for the planner
    assert lane.ask(0.01) == chunk
    lane.done()
    assert lane.current is None and [r.chunk for r in lane.reports()] == [chunk] and pokes == [1]
    assert lane.reports() == []  # each report is taken once
    lane.finish()
    assert lane.ask(5.0) is Ask.FINISHED  # at once, not after the timeout


def test_a_waiting_loop_wakes_on_an_offer_from_another_thread() -> None:
    lane = LocalLane(CostModel(0.0, 1.0), max_batch=1)
    chunk = Chunk("master", 0, 1)
    threading.Timer(0.05, lane.offer, args=(chunk,)).start()
    assert lane.ask(5.0) == chunk


def test_the_first_chunk_starts_before_any_offer() -> None:
    lane = LocalLane(CostModel(0.0, 1.0), max_batch=8)
    lane.take_first(Chunk("master", 0, 8))
    assert lane.current is not None
    lane.done()
    (report,) = lane.reports()
    assert report.chunk.count == 8 and report.seconds >= 0
