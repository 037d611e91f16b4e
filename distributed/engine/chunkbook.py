"""Where every image index and every chunk of a job stands: the one place their states change.

An index is PENDING (waiting to be planned), HELD (in a chunk on a worker or on the master's lane) or DONE. A chunk
is SENT until it settles as DONE (its images came back; any it lacks go back to PENDING), FAILED (an error: its
indices go back to PENDING with the same seeds), EXPIRED (it passed its deadline and was interrupted: the same, and
each index's missed deadlines grow, so its retry gets a longer one) or CANCELLED (the job ended while it ran).
Extra images (opt-in, beyond the N asked for) are held and kept when they arrive, but never re-queued.

Any other move is a bug in the engine and raises ChunkBookError: an index is never held twice or finished twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from distributed.engine.scheduler import Chunk

Image = TypeVar("Image")


class IndexState(str, Enum):
    PENDING = "pending"
    HELD = "held"
    DONE = "done"


class ChunkState(str, Enum):
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


SETTLED = {ChunkState.DONE, ChunkState.FAILED, ChunkState.EXPIRED, ChunkState.CANCELLED}


class ChunkBookError(RuntimeError):
    """A move the book does not allow: the engine would lose or duplicate an image."""


@dataclass
class BookedChunk:
    chunk: Chunk
    holder: str
    state: ChunkState = ChunkState.SENT


class ChunkBook(Generic[Image]):
    def __init__(self, indices: Iterable[int]) -> None:
        self._state: dict[int, IndexState] = dict.fromkeys(indices, IndexState.PENDING)
        self.total = len(self._state)
        self.results: dict[int, Image] = {}  # images that came back from workers, by index
        self.local: set[int] = set()  # indices the master rendered itself (it keeps those images)
        self.misses: dict[int, int] = {}  # index -> deadlines it missed, for longer retries
        self.bad_answers: dict[int, set[str]] = {}  # index -> workers that failed it with an HTTP error or garbage

    # -- reading -------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> frozenset[int]:
        return frozenset(i for i, state in self._state.items() if state == IndexState.PENDING)

    def state(self, index: int) -> IndexState:
        return self._state[index]

    def done_count(self, below: int) -> int:
        """Images finished among the first `below` indices (extras are not counted)."""
        return sum(1 for i in self.results if i < below) + len(self.local)

    def retries(self, chunk: Chunk) -> int:
        return max((self.misses.get(i, 0) for i in chunk.indices), default=0)

    def blame(self, booked: BookedChunk) -> tuple[int, int]:
        """A chunk failed with an HTTP error or garbage: note its worker against each of its images; returns the
        image failed by the most distinct workers so far and their number."""
        worst = (booked.chunk.start, 0)
        for index in booked.chunk.indices:
            workers = self.bad_answers.setdefault(index, set())
            workers.add(booked.holder)
            worst = max(worst, (index, len(workers)), key=lambda pair: pair[1])
        return worst

    # -- moves ---------------------------------------------------------------------------------------------------
    def take(self, chunk: Chunk, holder: str) -> BookedChunk:
        """PENDING -> HELD for the chunk's indices (extras enter the book here, held)."""
        for index in chunk.indices:
            expected = None if chunk.extra else IndexState.PENDING
            if self._state.get(index) != expected:
                raise ChunkBookError(f"{holder} cannot take image {index}: it is {self._state.get(index)}")
        for index in chunk.indices:
            self._state[index] = IndexState.HELD
        return BookedChunk(chunk, holder)

    def settle(self, booked: BookedChunk, state: ChunkState, images: dict[int, Image] | None = None) -> list[int]:
        """SENT -> `state`; returns the indices that went back to PENDING."""
        if booked.state != ChunkState.SENT or state not in SETTLED:
            raise ChunkBookError(f"chunk {booked.chunk.start}-{booked.chunk.end}: {booked.state} -> {state}")
        booked.state = state
        received = images or {}
        if received and state != ChunkState.DONE:
            raise ChunkBookError("only a chunk that came back carries images")
        for index, image in received.items():
            if index not in booked.chunk.indices or self._state.get(index) != IndexState.HELD:
                raise ChunkBookError(f"image {index} arrived from {booked.holder}, which did not hold it")
            self._state[index] = IndexState.DONE
            self.results[index] = image
        if state == ChunkState.EXPIRED:
            for index in booked.chunk.indices:
                self.misses[index] = self.misses.get(index, 0) + 1
        back = [i for i in booked.chunk.indices if self._state.get(i) == IndexState.HELD]
        for index in back:
            if booked.chunk.extra:
                del self._state[index]  # an extra nobody made is simply not made
            else:
                self._state[index] = IndexState.PENDING
        return [] if booked.chunk.extra else back

    def rendered_locally(self, booked: BookedChunk) -> None:
        """The master finished its chunk: HELD -> DONE, the images stay with the master."""
        self._require_held(booked)
        booked.state = ChunkState.DONE
        for index in booked.chunk.indices:
            self._state[index] = IndexState.DONE
        self.local.update(booked.chunk.indices)

    def _require_held(self, booked: BookedChunk) -> None:
        if booked.state != ChunkState.SENT or any(self._state.get(i) != IndexState.HELD for i in booked.chunk.indices):
            raise ChunkBookError(f"chunk {booked.chunk.start}-{booked.chunk.end} of {booked.holder} is not held")
