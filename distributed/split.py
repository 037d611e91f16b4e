"""How many of a webui job's images the master renders itself, in the webui's own loop.

The master takes the first images (indices 0..count-1) in batches no larger than the user's batch size, so its
VRAM use never grows; the fleet takes the rest at once. The split comes from the same planner as everything else,
with the master as one more slot whose speed is learned from its own generations.
"""

from __future__ import annotations

from dataclasses import dataclass

from distributed.costmodel import CostModel, Workload
from distributed.scheduler import Slot, allocate

MASTER = "master"


@dataclass(frozen=True)
class LocalShare:
    count: int  # images the master renders: indices 0..count-1
    batch_size: int  # per local iteration
    iterations: int


def local_share(images: int, batch_size: int, master: CostModel, remote: list[Slot], workload: Workload) -> LocalShare:
    """The master's part of `images`: planned, then cut to whole batches of at most `batch_size`."""
    if images <= 0:
        return LocalShare(0, 1, 0)
    if not remote:
        return LocalShare(images, batch_size, -(-images // batch_size))
    mine = Slot(MASTER, master.overhead_s, master.per_image(workload), 0.0, batch_size)
    count = allocate(images, [mine, *remote]).get(MASTER, 0)
    if count <= 0:
        return LocalShare(0, 1, 0)
    batch = min(batch_size, count)
    iterations = count // batch
    return LocalShare(iterations * batch, batch, iterations)
