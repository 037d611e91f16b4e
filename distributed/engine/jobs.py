"""What a job is made of: its request, its chunks' payloads, and the images that come back."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from distributed.engine.client import GenerationResponse
from distributed.engine.costmodel import Workload
from distributed.engine.scheduler import Chunk
from distributed.errors import WorkerInvalidResponse


def fixed_seed(seed: int) -> int:
    """A1111's get_fixed_seed: -1 picks one."""
    return random.randrange(4294967294) if seed in (-1, None) else int(seed)


@dataclass
class JobSpec:
    """One job: N images of one request, seeds fixed before anything is sent."""

    kind: str  # "txt2img" or "img2img"
    payload: dict[str, Any]  # the A1111 request without batch_size, n_iter, seed and subseed
    images: int
    seed: int
    subseed: int
    subseed_strength: float = 0.0
    workload: Workload = field(default_factory=lambda: Workload(512, 512, 20))
    extra_slack: float | None = None  # opt-in extras for idle time
    # per-image prompts when they differ by index (wildcards, the master's styles already applied): each image is
    # then its own request, as A1111's API takes one prompt per request
    prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    # what differs by worker (its title for the checkpoint, the scripts it has): merged into each chunk's request
    per_worker: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def uniform(self) -> bool:
        return all(len(set(texts)) <= 1 for texts in (self.prompts or [], self.negative_prompts or []))

    def seeds_for(self, index: int) -> tuple[int, int]:
        """A1111's rule: seed + k (or the seed itself with variation on), subseed + k."""
        seed = self.seed + (index if self.subseed_strength == 0 else 0)
        return seed, self.subseed + index

    def chunk_payload(self, chunk: Chunk) -> dict[str, Any]:
        seed, subseed = self.seeds_for(chunk.start)
        payload = dict(self.payload)
        if self.prompts:
            payload["prompt"] = self.prompts[chunk.start]
        if self.negative_prompts:
            payload["negative_prompt"] = self.negative_prompts[chunk.start]
        for key, value in self.per_worker.get(chunk.worker, {}).items():
            both_dicts = isinstance(value, dict) and isinstance(payload.get(key), dict)
            payload[key] = {**payload[key], **value} if both_dicts else value
        payload.update(
            seed=seed,
            subseed=subseed,
            subseed_strength=self.subseed_strength,
            batch_size=chunk.count,
            n_iter=1,
            send_images=True,
            save_images=False,
        )
        return payload


@dataclass
class ImageResult:
    index: int
    seed: int
    subseed: int
    png: bytes
    infotext: str
    worker: str
    extra: bool = False


def check_response(spec: JobSpec, chunk: Chunk, response: GenerationResponse, partial: bool) -> list[ImageResult]:
    """The chunk's images, checked against what was asked; a mismatch is the worker's fault."""
    got = len(response.images)
    if got > chunk.count or (got < chunk.count and not partial):
        raise WorkerInvalidResponse(chunk.worker, f"sent {got} images for a chunk of {chunk.count}")
    expected = [spec.seeds_for(i) for i in chunk.indices[:got]]
    _check_seeds(chunk.worker, response.info, expected, spec.subseed_strength != 0)
    texts = response.infotexts
    return [
        ImageResult(
            index=chunk.start + offset,
            seed=expected[offset][0],
            subseed=expected[offset][1],
            png=png,
            infotext=texts[offset] if offset < len(texts) else "",
            worker=chunk.worker,
            extra=chunk.extra,
        )
        for offset, png in enumerate(response.images)
    ]


def _check_seeds(worker: str, info: dict[str, Any], expected: list[tuple[int, int]], variation: bool) -> None:
    """Image k must have seed base + k. The worker's own account of every image's seed is required, not assumed:
    `info.seed` names only the first image, and a worker reusing one seed for its whole batch would pass on it.
    A1111, Forge and the headless worker always send all_seeds; a worker that does not fails the chunk, and its
    images go elsewhere with the same seeds."""
    if not expected:  # an interrupted chunk that made nothing vouches for nothing
        return
    seeds = info.get("all_seeds")
    if not isinstance(seeds, list):
        raise WorkerInvalidResponse(worker, "the answer's info has no all_seeds list, so its images' seeds are unknown")
    wanted = [seed for seed, _ in expected]
    if seeds[: len(expected)] != wanted:
        raise WorkerInvalidResponse(worker, f"answered seeds {seeds[: len(expected)]} for {wanted}")
    if variation:  # variation seeds shape the picture only when their strength is not 0
        subseeds = info.get("all_subseeds")
        wanted = [subseed for _, subseed in expected]
        if not isinstance(subseeds, list) or subseeds[: len(expected)] != wanted:
            shown = subseeds[: len(expected)] if isinstance(subseeds, list) else "none"
            raise WorkerInvalidResponse(worker, f"answered variation seeds {shown} for {wanted}")


@dataclass
class WorkerStats:
    images: int = 0
    failed_chunks: int = 0
    chunks: int = 0
    busy_s: float = 0.0
    spans: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, images), job-relative s


@dataclass
class JobResult:
    images: list[ImageResult]  # the N requested images (and extras, if opted in), by index
    wall_s: float
    workers: dict[str, WorkerStats]
    failures: list[str]  # one line per failed chunk: worker and cause
    interrupted: bool = False
    excluded: dict[str, str] = field(default_factory=dict)  # workers that sat the job out, and why

    @property
    def requested(self) -> list[ImageResult]:
        return [image for image in self.images if not image.extra]
