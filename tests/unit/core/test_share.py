"""The fairness rule of workers shared by concurrent jobs (engine/share.py), without HTTP."""

from __future__ import annotations

from distributed.engine.share import FleetShare


class Pokes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_worker_is_held_by_one_job_at_a_time() -> None:
    share = FleetShare()
    a, b = share.join(Pokes()), share.join(Pokes())
    share.want(a, {"fast"})
    assert share.claim(a, "fast", 10.0)
    assert share.busy_until(b, "fast") == 10.0
    assert share.busy_until(a, "fast") is None  # its own chunk is not someone else's
    assert not share.claim(b, "fast", 5.0)
    share.release(a, "fast")
    assert share.busy_until(b, "fast") is None


def test_a_freed_worker_goes_to_the_job_holding_fewest_not_the_one_that_asks_first() -> None:
    """A long job asking again right after its chunk ends is refused while a newer job that wants the worker holds
    nothing: a 1-image job is not stuck behind a 96-image one."""
    share = FleetShare()
    big_pokes, small_pokes = Pokes(), Pokes()
    big, small = share.join(big_pokes), share.join(small_pokes)
    share.want(big, {"fast", "slow"})
    assert share.claim(big, "fast", 1.0) and share.claim(big, "slow", 5.0)
    share.want(small, {"fast"})  # its plan waits for the fast worker
    share.release(big, "fast")
    before = small_pokes.count
    assert not share.claim(big, "fast", 2.0)  # refused: small holds nothing and wants it
    assert small_pokes.count > before  # ... and small is woken to take it
    assert share.claim(small, "fast", 2.0)


def test_equal_jobs_take_turns_by_arrival() -> None:
    share = FleetShare()
    first, second = share.join(Pokes()), share.join(Pokes())
    share.want(first, {"w"})
    share.want(second, {"w"})
    assert not share.claim(second, "w", 1.0)  # both hold nothing: the earlier arrival is next
    assert share.claim(first, "w", 1.0)


def test_a_worker_nobody_else_wants_is_never_refused() -> None:
    share = FleetShare()
    big, small = share.join(Pokes()), share.join(Pokes())
    share.want(small, {"fast"})
    share.want(big, {"fast", "slow"})
    assert share.claim(big, "slow", 5.0)  # small does not want slow


def test_leaving_frees_what_a_job_held_and_wakes_the_others() -> None:
    share = FleetShare()
    waiting = Pokes()
    gone, other = share.join(Pokes()), share.join(waiting)
    share.want(gone, {"w"})
    assert share.claim(gone, "w", 3.0)
    share.leave(gone)
    assert waiting.count >= 1
    assert share.busy_until(other, "w") is None
    assert share.used_lately("w")  # its progress may still show the chunk that just ended


def test_a_change_of_wants_wakes_the_others_only_when_it_changes() -> None:
    share = FleetShare()
    pokes = Pokes()
    share.join(pokes)
    job = share.join(Pokes())
    share.want(job, {"w"})
    seen = pokes.count
    share.want(job, {"w"})
    assert pokes.count == seen  # no wake-up storm between loops
    share.want(job, set())
    assert pokes.count == seen + 1


def test_a_worker_several_jobs_want_is_planned_at_its_share_of_the_speed() -> None:
    share = FleetShare()
    one, two, three = share.join(Pokes()), share.join(Pokes()), share.join(Pokes())
    assert share.contenders("fast") == 1  # nobody wants it yet: planned at full speed
    share.want(one, {"fast", "slow"})
    share.want(two, {"fast"})
    share.want(three, set())
    assert share.contenders("fast") == 2 and share.contenders("slow") == 1
