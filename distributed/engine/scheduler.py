"""Pure planning: which worker makes which image indices, minimising the predicted finish time.

A worker's finish time for k images is its availability plus, per request, its overhead, plus k images at its
per-image cost. The smallest makespan T at which the workers together can finish n images is found by bisection
(each worker's capacity by T is monotone in T), then the surplus is taken back from the latest finishers. Shares
are cut into a few chunks where overhead allows, so the dispatcher can move unstarted chunks between workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from distributed.errors import NoWorkersError

DEFAULT_MAX_BATCH = 32  # images per request when a worker has no cap: large batches risk VRAM and long deadlines
MAX_PIECES = 4  # a worker's share is cut into at most this many chunks...
PIECE_OVERHEAD_SHARE = 0.05  # ...and only while the extra overhead stays under 5% of the plan


@dataclass(frozen=True)
class Slot:
    """One worker as the planner sees it."""

    name: str
    overhead_s: float
    per_image_s: float
    available_in_s: float = 0.0  # busy until then (its current chunk or someone else's job)
    max_batch: int | None = None  # images per request, from caps (max_batch, max_pixels / image pixels)

    def finish(self, images: int, batch: int | None = None) -> float:
        if images <= 0:
            return self.available_in_s
        limit = batch or self.max_batch or images
        return self.available_in_s + math.ceil(images / limit) * self.overhead_s + images * self.per_image_s

    def capacity(self, deadline: float, batch: int | None = None) -> int:
        """The most images this worker can finish by `deadline`."""
        room = deadline - self.available_in_s
        if room <= self.overhead_s:
            return 0
        limit = batch or self.max_batch
        if limit is None:
            return max(0, math.floor((room - self.overhead_s) / self.per_image_s + 1e-9))
        per_full_request = self.overhead_s + limit * self.per_image_s
        full = math.floor(room / per_full_request + 1e-12)
        rest = room - full * per_full_request
        partial = (
            max(0, math.floor((rest - self.overhead_s) / self.per_image_s + 1e-9)) if rest > self.overhead_s else 0
        )
        return full * limit + min(partial, limit)


def member_slot(
    name: str,
    overhead_s: float,
    per_image_s: float,
    available_in_s: float,
    *,
    max_batch: int | None,
    max_pixels: int | None = None,
    image_pixels: int = 0,
    measured: bool = True,
    one_prompt_per_request: bool = False,
) -> Slot:
    """The one place that turns a fleet member (a worker or the master) into a Slot, with every batch rule:
    the member's cap or DEFAULT_MAX_BATCH, its pixel cap, a single image while it has not shown its speed, and a
    single image per request when prompts differ by image (A1111's API takes one prompt per request)."""
    limits = [max_batch or DEFAULT_MAX_BATCH]
    if max_pixels:
        limits.append(max(1, max_pixels // max(1, image_pixels)))
    if not measured or one_prompt_per_request:
        limits.append(1)
    return Slot(name, overhead_s, per_image_s, max(0.0, available_in_s), min(limits))


@dataclass(frozen=True)
class Chunk:
    worker: str
    start: int
    count: int
    extra: bool = False  # beyond the N images asked for (opt-in idle-time extras)

    @property
    def indices(self) -> range:
        return range(self.start, self.start + self.count)

    @property
    def end(self) -> int:
        """The last index (inclusive)."""
        return self.start + self.count - 1


@dataclass
class Plan:
    chunks: list[Chunk]
    finish_s: dict[str, float]  # predicted finish per worker that has work
    shares: dict[str, int] = field(default_factory=dict)

    @property
    def makespan_s(self) -> float:
        return max(self.finish_s.values(), default=0.0)

    def for_worker(self, name: str) -> list[Chunk]:
        return [c for c in self.chunks if c.worker == name]


def allocate(n: int, slots: Sequence[Slot]) -> dict[str, int]:
    """Images per worker minimising the latest finish (exact n)."""
    if n <= 0:
        return {}
    if not slots:
        raise NoWorkersError("no usable worker for this job")

    def capacity(deadline: float) -> dict[str, int]:
        return {s.name: min(n, s.capacity(deadline)) for s in slots}

    high = min(s.finish(n) for s in slots)  # the fastest worker alone
    low = min(s.available_in_s + s.overhead_s for s in slots)
    for _ in range(100):
        if high - low <= 1e-9 * max(1.0, high):
            break
        middle = (low + high) / 2
        if sum(capacity(middle).values()) >= n:
            high = middle
        else:
            low = middle
    counts = capacity(high)
    surplus = sum(counts.values()) - n
    by_name = {s.name: s for s in slots}
    while surplus > 0:
        latest = max(
            (name for name, count in counts.items() if count > 0),
            key=lambda name: by_name[name].finish(counts[name]),
        )
        counts[latest] -= 1
        surplus -= 1
    return {name: count for name, count in counts.items() if count > 0}


def _piece_sizes(slot: Slot, images: int, makespan: float) -> list[int]:
    limit = slot.max_batch or images
    requests = math.ceil(images / limit)
    pieces = requests
    while pieces < MAX_PIECES * requests and pieces < images:
        if (pieces + 1 - requests) * slot.overhead_s > PIECE_OVERHEAD_SHARE * makespan:
            break
        pieces += 1
    base, rest = divmod(images, pieces)
    return [base + (1 if i < rest else 0) for i in range(pieces)]


def plan(
    indices: Iterable[int],
    slots: Sequence[Slot],
    extra_slack: float | None = None,
    first_extra_index: int | None = None,
) -> Plan:
    """Assign the given image indices (contiguous runs where possible) to workers.

    With `extra_slack` set (opt-in), workers that would sit idle before the plan ends get extra images numbered from
    `first_extra_index`, as long as they still finish within (1 + extra_slack) x the plan's makespan.
    """
    pending = sorted(set(indices))
    n = len(pending)
    counts = allocate(n, slots)
    by_name = {s.name: s for s in slots}
    makespan = max((by_name[name].finish(count) for name, count in counts.items()), default=0.0)
    pieces = {name: _piece_sizes(by_name[name], count, makespan) for name, count in counts.items()}
    finish = {name: by_name[name].finish(counts[name], max(pieces[name])) for name in counts}
    if n and slots:
        alone = min(slots, key=lambda s: s.finish(n))
        if max(finish.values()) > alone.finish(n):  # cutting into pieces must never lose to one worker alone
            counts = {alone.name: n}
            pieces = {alone.name: _piece_sizes(alone, n, 0.0)}
            finish = {alone.name: alone.finish(n)}
    # fastest first: the quickest worker takes the lowest indices (its images arrive first)
    order = sorted(counts, key=lambda name: by_name[name].per_image_s)
    chunks: list[Chunk] = []
    runs = contiguous_runs(pending)
    for name in order:
        for size in pieces[name]:
            chunks += _take(runs, size, name)
    shares = dict(counts)
    if extra_slack is not None and first_extra_index is not None and n > 0:
        limit = max(finish.values()) * (1 + extra_slack)
        chunks, finish, shares = _add_extras(chunks, finish, shares, slots, limit, first_extra_index)
    return Plan(chunks, finish, shares)


def contiguous_runs(pending: list[int]) -> list[list[int]]:
    """Sorted indices as runs of consecutive numbers: [1, 2, 3, 7, 8] -> [[1, 2, 3], [7, 8]]."""
    runs: list[list[int]] = []
    for index in pending:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def _take(runs: list[list[int]], size: int, worker: str) -> list[Chunk]:
    """Up to `size` images from the front, as contiguous chunks (several if the pending indices are fragmented)."""
    chunks = []
    while size > 0 and runs:
        run = runs[0]
        take = min(size, len(run))
        chunks.append(Chunk(worker, run[0], take))
        del run[:take]
        if not run:
            runs.pop(0)
        size -= take
    return chunks


def _add_extras(
    chunks: list[Chunk],
    finish: dict[str, float],
    shares: dict[str, int],
    slots: Sequence[Slot],
    limit_s: float,
    first_index: int,
) -> tuple[list[Chunk], dict[str, float], dict[str, int]]:
    next_index = first_index
    for slot in sorted(slots, key=lambda s: s.per_image_s):
        have = shares.get(slot.name, 0)
        most = slot.capacity(limit_s)
        extra = max(0, most - have)
        if extra == 0:
            continue
        # extras go in one request of their own: they must never delay the real images
        if slot.finish(have) + slot.overhead_s + extra * slot.per_image_s > limit_s:
            extra = max(0, math.floor((limit_s - slot.finish(have) - slot.overhead_s) / slot.per_image_s))
        if extra <= 0:
            continue
        chunks.append(Chunk(slot.name, next_index, extra, extra=True))
        next_index += extra
        shares[slot.name] = have + extra
        finish[slot.name] = slot.finish(have) + slot.overhead_s + extra * slot.per_image_s
    return chunks, finish, shares
