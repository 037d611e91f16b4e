"""The chunk book: every move of an image index and a chunk, without HTTP."""

from __future__ import annotations

import pytest

from distributed.engine.chunkbook import ChunkBook, ChunkBookError, ChunkState, IndexState
from distributed.engine.scheduler import Chunk


def test_a_chunk_takes_pending_indices_and_returns_what_it_lacks() -> None:
    book: ChunkBook[str] = ChunkBook(range(6))
    booked = book.take(Chunk("a", 0, 4), "a")
    assert book.pending == {4, 5}
    assert [book.state(i) for i in range(4)] == [IndexState.HELD] * 4
    back = book.settle(booked, ChunkState.DONE, {0: "img0", 1: "img1"})
    assert back == [2, 3]
    assert book.pending == {2, 3, 4, 5}
    assert book.results == {0: "img0", 1: "img1"}
    assert book.done_count(below=6) == 2


@pytest.mark.parametrize("state", [ChunkState.FAILED, ChunkState.EXPIRED, ChunkState.CANCELLED])
def test_a_lost_chunk_goes_back_to_the_queue(state: ChunkState) -> None:
    book: ChunkBook[str] = ChunkBook(range(4))
    booked = book.take(Chunk("a", 1, 2), "a")
    assert book.settle(booked, state) == [1, 2]
    assert book.pending == {0, 1, 2, 3}
    assert booked.state == state
    assert book.retries(Chunk("b", 1, 2)) == (1 if state == ChunkState.EXPIRED else 0)


def test_expired_indices_remember_each_missed_deadline() -> None:
    book: ChunkBook[str] = ChunkBook(range(2))
    for _ in range(3):
        book.settle(book.take(Chunk("a", 0, 2), "a"), ChunkState.EXPIRED)
    assert book.retries(Chunk("b", 0, 1)) == 3


def test_an_index_is_never_held_twice_nor_finished_twice() -> None:
    book: ChunkBook[str] = ChunkBook(range(4))
    booked = book.take(Chunk("a", 0, 2), "a")
    with pytest.raises(ChunkBookError, match="cannot take image 1"):
        book.take(Chunk("b", 1, 2), "b")
    book.settle(booked, ChunkState.DONE, {0: "x", 1: "y"})
    with pytest.raises(ChunkBookError):
        book.settle(booked, ChunkState.FAILED)
    with pytest.raises(ChunkBookError, match="cannot take image 0"):
        book.take(Chunk("b", 0, 1), "b")


def test_images_only_from_the_chunk_that_held_them() -> None:
    book: ChunkBook[str] = ChunkBook(range(4))
    booked = book.take(Chunk("a", 0, 2), "a")
    with pytest.raises(ChunkBookError, match="image 3 arrived from a"):
        book.settle(booked, ChunkState.DONE, {3: "stray"})
    with pytest.raises(ChunkBookError):
        book.settle(book.take(Chunk("b", 2, 1), "b"), ChunkState.FAILED, {2: "x"})


def test_the_masters_chunk_stays_with_the_master() -> None:
    book: ChunkBook[str] = ChunkBook(range(3))
    booked = book.take(Chunk("master", 0, 2), "master")
    book.rendered_locally(booked)
    assert book.local == {0, 1}
    assert book.results == {}
    assert book.done_count(below=3) == 2
    with pytest.raises(ChunkBookError):
        book.rendered_locally(booked)


def test_extras_are_kept_when_made_and_never_requeued() -> None:
    book: ChunkBook[str] = ChunkBook(range(2))
    extra = book.take(Chunk("a", 2, 2, extra=True), "a")
    assert book.pending == {0, 1}
    assert book.settle(extra, ChunkState.DONE, {2: "bonus"}) == []
    assert book.results == {2: "bonus"}
    assert book.pending == {0, 1}
    assert book.done_count(below=2) == 0
    lost = book.take(Chunk("b", 4, 1, extra=True), "b")
    assert book.settle(lost, ChunkState.FAILED) == []
    assert book.pending == {0, 1}


def test_blame_counts_distinct_workers_per_image() -> None:
    book: ChunkBook[str] = ChunkBook(range(4))
    first = book.take(Chunk("a", 0, 2), "a")
    book.settle(first, ChunkState.FAILED)
    assert book.blame(first) == (0, 1)
    again = book.take(Chunk("a", 1, 1), "a")
    book.settle(again, ChunkState.FAILED)
    assert book.blame(again) == (1, 1)  # the same worker twice is still one worker
    other = book.take(Chunk("b", 1, 2), "b")
    book.settle(other, ChunkState.FAILED)
    assert book.blame(other) == (1, 2)
