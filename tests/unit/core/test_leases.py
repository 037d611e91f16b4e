"""The coordinator's lease book on a fake clock: leases expire and are reassigned, a late or duplicate report is
refused and never counted, epochs roll over, and nothing is lost."""

from __future__ import annotations

import threading

import pytest

from distributed.training.leases import LeaseBook, LeaseRefused


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def book() -> LeaseBook:
    clock = Clock()
    leases = LeaseBook(":memory:", lease_s=30.0, clock=clock)
    leases.load([["a", "b"], ["c", "d"], ["e"]])
    leases.clock = clock  # type: ignore[attr-defined]
    return leases


def test_each_chunk_is_leased_once_until_it_expires(book: LeaseBook) -> None:
    first, second, third = (book.lease(f"peer{n}") for n in range(3))
    assert first and second and third
    assert {first.chunk, second.chunk, third.chunk} == {0, 1, 2}
    assert book.lease("peer3") is None  # all held
    book.clock.now += 31  # type: ignore[attr-defined]
    again = book.lease("peer3")
    assert again is not None and again.chunk == first.chunk  # an expired lease's chunk goes first
    assert book.progress().reassigned == 1


def test_a_late_report_after_reassignment_is_refused_and_not_counted(book: LeaseBook) -> None:
    late = book.lease("slow")
    assert late is not None
    book.clock.now += 31  # type: ignore[attr-defined]
    fresh = book.lease("fast")
    assert fresh is not None and fresh.chunk == late.chunk
    with pytest.raises(LeaseRefused, match="not current"):
        book.report(late.id, 2, 0.5)
    with pytest.raises(LeaseRefused):
        book.renew(late.id)
    book.report(fresh.id, 2, 0.4)
    with pytest.raises(LeaseRefused, match="already done"):
        book.report(fresh.id, 2, 0.4)  # a duplicate
    progress = book.progress()
    assert progress.reports == 1 and progress.samples == 2 and progress.refused == 3


def test_renewal_keeps_a_lease_alive(book: LeaseBook) -> None:
    lease = book.lease("steady")
    assert lease is not None
    for _ in range(5):
        book.clock.now += 20  # type: ignore[attr-defined]
        book.renew(lease.id)
    assert book.lease("other") is not None and book.lease("other") is not None
    assert book.lease("third") is None  # the renewed chunk was never handed out again
    book.report(lease.id, 2, 0.3)


def test_an_expired_lease_that_nobody_took_yet_is_still_refused(book: LeaseBook) -> None:
    lease = book.lease("gone")
    assert lease is not None
    book.clock.now += 31  # type: ignore[attr-defined]
    with pytest.raises(LeaseRefused, match="expired"):
        book.report(lease.id, 2, 0.1)


def test_epochs_roll_over_and_every_sample_counts_once_per_epoch(book: LeaseBook) -> None:
    for epoch in (0, 1):
        seen = []
        for _ in range(3):  # the three chunks, each once
            lease = book.lease("p")
            assert lease is not None and lease.epoch == epoch
            seen += lease.samples
            assert book.report(lease.id, len(lease.samples), 0.2) == epoch
        assert sorted(seen) == ["a", "b", "c", "d", "e"]
        assert book.progress().epoch == epoch + 1  # all done: the next epoch starts with every chunk pending
    assert book.progress().samples == 10 and book.progress().reports == 6


def test_concurrent_trainers_never_share_a_chunk(book: LeaseBook) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def trainer(name: str) -> None:
        lease = book.lease(name)
        if lease is not None:
            with lock:
                got.append(lease.chunk)

    threads = [threading.Thread(target=trainer, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == [0, 1, 2]
