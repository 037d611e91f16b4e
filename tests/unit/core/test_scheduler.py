"""Property tests for the planner: exact images, contiguous chunks, caps, never worse than one worker alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed.engine.scheduler import Slot, allocate, plan
from distributed.errors import NoWorkersError

slot_strategy = st.builds(
    Slot,
    name=st.just("w"),
    overhead_s=st.floats(0.0, 2.0),
    per_image_s=st.floats(0.01, 20.0),
    available_in_s=st.floats(0.0, 30.0),
    max_batch=st.one_of(st.none(), st.integers(1, 16)),
)


@st.composite
def fleets(draw: st.DrawFn) -> list[Slot]:
    slots = draw(st.lists(slot_strategy, min_size=1, max_size=10))
    return [Slot(f"w{i}", s.overhead_s, s.per_image_s, s.available_in_s, s.max_batch) for i, s in enumerate(slots)]


@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 300), slots=fleets())
def test_plan_covers_exactly_n_in_contiguous_capped_chunks(n: int, slots: list[Slot]) -> None:
    result = plan(range(n), slots)
    covered = sorted(i for chunk in result.chunks for i in chunk.indices)
    assert covered == list(range(n))
    caps = {s.name: s.max_batch for s in slots}
    for chunk in result.chunks:
        assert chunk.count >= 1
        assert not chunk.extra
        cap = caps[chunk.worker]
        assert cap is None or chunk.count <= cap
    assert sum(result.shares.values()) == n


@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 300), slots=fleets())
def test_never_worse_than_the_fastest_worker_alone(n: int, slots: list[Slot]) -> None:
    result = plan(range(n), slots)
    alone = min(s.finish(n) for s in slots)
    assert result.makespan_s <= alone * (1 + 1e-9) + 1e-9


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(24, 400),
    rates=st.lists(st.floats(0.2, 5.0), min_size=1, max_size=8),
)
def test_close_to_ideal_when_chunks_allow(n: int, rates: list[float]) -> None:
    # small overhead, no caps, all idle: the plan's finish is within 10% of n over the summed rates
    slots = [Slot(f"w{i}", 0.01, 1.0 / r) for i, r in enumerate(rates)]
    ideal = n / sum(rates)
    slowest_image = max(1.0 / r for r in rates)
    result = plan(range(n), slots)
    # granularity: one image of the slowest worker is the most rounding can cost
    assert result.makespan_s <= max(ideal * 1.10, ideal + slowest_image + 0.05)


def test_seeds_follow_indices_with_fragmented_pending_work() -> None:
    slots = [Slot("a", 0.1, 1.0), Slot("b", 0.1, 2.0)]
    result = plan([0, 1, 2, 7, 8, 9, 10], slots)
    for chunk in result.chunks:
        assert list(chunk.indices) == list(range(chunk.start, chunk.start + chunk.count))
    assert sorted(i for c in result.chunks for i in c.indices) == [0, 1, 2, 7, 8, 9, 10]


def test_one_image_goes_to_the_quickest_finisher() -> None:
    slots = [Slot("busy-fast", 0.1, 1.0, available_in_s=10.0), Slot("slow", 0.1, 3.0)]
    assert allocate(1, slots) == {"slow": 1}
    assert [(c.worker, c.count) for c in plan([0], slots).chunks] == [("slow", 1)]


def test_fewer_images_than_workers() -> None:
    slots = [Slot(f"w{i}", 0.1, 1.0 + i) for i in range(5)]
    result = plan(range(2), slots)
    assert sorted(c.worker for c in result.chunks) == ["w0", "w1"]


def test_no_workers_is_a_clear_error() -> None:
    with pytest.raises(NoWorkersError, match="no usable worker"):
        plan(range(3), [])


def test_unequal_fleet_is_split_by_speed() -> None:
    slots = [Slot("fast", 0.05, 1.0), Slot("mid", 0.05, 2.5), Slot("slow", 0.05, 5.0)]
    shares = plan(range(24), slots).shares
    assert shares == {"fast": 15, "mid": 6, "slow": 3}


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 100), slots=fleets(), slack=st.floats(0.0, 0.5))
def test_extras_only_when_asked_and_only_within_the_slack(n: int, slots: list[Slot], slack: float) -> None:
    base = plan(range(n), slots)
    with_extras = plan(range(n), slots, extra_slack=slack, first_extra_index=n)
    real = sorted(i for c in with_extras.chunks if not c.extra for i in c.indices)
    extra = sorted(i for c in with_extras.chunks if c.extra for i in c.indices)
    assert real == list(range(n))
    assert extra == list(range(n, n + len(extra)))
    assert with_extras.makespan_s <= base.makespan_s * (1 + slack) + 1e-6
