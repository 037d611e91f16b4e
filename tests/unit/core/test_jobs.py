"""check_response: a chunk's images are accepted only when the worker's account of their seeds is base + k."""

from __future__ import annotations

from typing import Any

import pytest

from distributed.engine.client import GenerationResponse
from distributed.engine.costmodel import Workload
from distributed.engine.jobs import JobSpec, check_response
from distributed.engine.scheduler import Chunk
from distributed.errors import WorkerInvalidResponse

BASE, SUBBASE = 1000, 5000
CHUNK = Chunk("peer", start=3, count=3)  # images 3, 4, 5 of the job: seeds 1003, 1004, 1005


def _spec(subseed_strength: float = 0.0) -> JobSpec:
    payload = {"prompt": "x", "width": 64, "height": 64, "steps": 4}
    return JobSpec("txt2img", payload, 8, BASE, SUBBASE, subseed_strength, workload=Workload(64, 64, 4))


def _answer(images: int, **info: Any) -> GenerationResponse:
    pngs = [f"png {n}".encode() for n in range(images)]  # check_response reads counts and seeds, not pixels
    return GenerationResponse(pngs, {"infotexts": [f"image {n}" for n in range(images)], **info})


def test_the_seeds_asked_for_are_accepted_and_carried() -> None:
    images = check_response(_spec(), CHUNK, _answer(3, all_seeds=[1003, 1004, 1005], seed=1003), partial=False)
    assert [(i.index, i.seed, i.subseed) for i in images] == [(3, 1003, 5003), (4, 1004, 5004), (5, 1005, 5005)]
    assert [i.infotext for i in images] == ["image 0", "image 1", "image 2"]
    assert {i.worker for i in images} == {"peer"}


@pytest.mark.parametrize(
    "seeds",
    [
        [1003, 1003, 1003],  # one seed for the whole batch: image 4 and 5 would be mislabelled
        [0, 1, 2],  # the seed was ignored
        [1000, 1001, 1002],  # the job's base instead of the chunk's first index
        [1003, 1004],  # fewer seeds than images
    ],
)
def test_other_seeds_are_the_workers_fault(seeds: list[int]) -> None:
    with pytest.raises(WorkerInvalidResponse, match=r"answered seeds") as raised:
        check_response(_spec(), CHUNK, _answer(3, all_seeds=seeds, seed=1003), partial=False)
    assert raised.value.worker == "peer"


@pytest.mark.parametrize("info", [{"seed": 1003}, {}, {"all_seeds": 1003, "seed": 1003}, {"all_seeds": None}])
def test_an_answer_without_all_seeds_is_refused(info: dict[str, Any]) -> None:
    """info.seed vouches for the first image only: without all_seeds, image 4 and 5's seeds are unknown."""
    with pytest.raises(WorkerInvalidResponse, match="all_seeds"):
        check_response(_spec(), CHUNK, _answer(3, **info), partial=False)


def test_an_interrupted_chunk_keeps_what_it_made_with_the_right_seeds() -> None:
    # A1111 lists every seed of the request even when it stopped early
    images = check_response(_spec(), CHUNK, _answer(2, all_seeds=[1003, 1004, 1005]), partial=True)
    assert [(i.index, i.seed) for i in images] == [(3, 1003), (4, 1004)]
    assert check_response(_spec(), CHUNK, _answer(0), partial=True) == []  # nothing made, nothing to vouch for
    with pytest.raises(WorkerInvalidResponse, match="answered seeds"):
        check_response(_spec(), CHUNK, _answer(2, all_seeds=[1004, 1005]), partial=True)


def test_variation_seeds_are_checked_when_variation_is_on() -> None:
    varied = _spec(subseed_strength=0.5)  # A1111 keeps the seed and steps the subseed
    good = {"all_seeds": [1000] * 3, "all_subseeds": [5003, 5004, 5005]}
    images = check_response(varied, CHUNK, _answer(3, **good), partial=False)
    assert [(i.seed, i.subseed) for i in images] == [(1000, 5003), (1000, 5004), (1000, 5005)]
    for subseeds in ([5003, 5003, 5003], None):
        with pytest.raises(WorkerInvalidResponse, match="variation seeds"):
            check_response(varied, CHUNK, _answer(3, all_seeds=[1000] * 3, all_subseeds=subseeds), partial=False)
    # without variation the subseed changes nothing in the picture, so it is not asked for
    assert len(check_response(_spec(), CHUNK, _answer(3, all_seeds=[1003, 1004, 1005]), partial=False)) == 3


def test_a_wrong_image_count_is_refused() -> None:
    with pytest.raises(WorkerInvalidResponse, match="sent 2 images for a chunk of 3"):
        check_response(_spec(), CHUNK, _answer(2, all_seeds=[1003, 1004, 1005]), partial=False)
