from __future__ import annotations

import random
import statistics
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed.compat import dump, validate
from distributed.engine import benchmark
from distributed.engine.config import CostModelState, FleetConfig
from distributed.engine.costmodel import REFERENCE, TERMS, CostModel, Observation, Workload, prior

SMALL = Workload(64, 64, 4)
# what the real tiny model on one CPU thread measured (docs/benchmarks/README.md), rounded: every term counts
TINY_CPU = CostModel.from_terms([0.0066, 0.0063, 0.74, 0.57, 20.7])


def benchmark_design(asked: Workload, steps: int) -> list[tuple[int, Workload]]:
    """The requests the benchmark times, as (images, workload)."""
    plan = [(n, Workload(asked.width, asked.height, 1)) for n in benchmark.SHORT_BATCHES]
    plan += [(n, each) for each, n in benchmark._plan(asked, steps, None)]
    return plan


def observed(truth: CostModel, design: list[tuple[int, Workload]]) -> list[Observation]:
    return [Observation(n, w, truth.predict(n, w)) for n, w in design]


@given(overhead=st.floats(0.0, 3.0), per_unit=st.floats(0.01, 100.0))
def test_fit_recovers_overhead_and_slope(overhead: float, per_unit: float) -> None:
    points = [Observation(n, SMALL, overhead + n * SMALL.units * per_unit) for n in (1, 2, 4, 8)]
    model = CostModel.fit(points)
    assert model.overhead_s == pytest.approx(overhead, abs=1e-6 + 1e-6 * per_unit)
    assert model.seconds_per_unit == pytest.approx(per_unit, rel=1e-6)
    assert model.terms[1:3] == (0.0, 0.0) and model.attention_s_per_mp2 == 0.0  # nothing the data does not show


@settings(max_examples=60, deadline=None)
@given(
    terms=st.tuples(
        st.floats(0.0, 1.0), st.floats(0.0, 0.05), st.floats(0.0, 2.0), st.floats(0.05, 5.0), st.floats(0.0, 30.0)
    ),
    side=st.sampled_from([128, 256, 512, 768]),
    steps=st.integers(2, 20),
)
def test_the_benchmark_design_recovers_every_term(terms: tuple[float, ...], side: int, steps: int) -> None:
    truth = CostModel.from_terms(terms)
    model = CostModel.fit(observed(truth, benchmark_design(Workload(side, side, 20), steps)))
    for name, fitted, true in zip(TERMS, model.terms, truth.terms, strict=True):
        assert fitted == pytest.approx(true, rel=1e-4, abs=1e-7), name


@pytest.mark.parametrize(
    "other",
    [
        Workload(64, 64, 12),
        Workload(256, 256, 12),
        Workload(128, 128, 4),
        Workload(128, 128, 30),
        Workload(192, 96, 20),
    ],
)
def test_one_benchmark_predicts_other_resolutions_and_steps(other: Workload) -> None:
    asked = Workload(128, 128, 12)
    model = CostModel.fit(observed(TINY_CPU, benchmark_design(asked, 7)))
    for images in (1, 4):
        assert model.predict(images, other) == pytest.approx(TINY_CPU.predict(images, other), rel=1e-6)


def test_megapixel_steps_alone_miss_what_the_terms_catch() -> None:
    """The old model (overhead + megapixel-steps), fitted on 1, 2 and 4 images at 128x128, 12 steps of the tiny
    model's real costs, is far off after a change; the terms above are what fixes it."""
    asked = Workload(128, 128, 12)
    plain = CostModel.fit([Observation(n, asked, TINY_CPU.predict(n, asked)) for n in (1, 2, 4)])
    assert plain.terms[1:3] == (0.0, 0.0) and plain.attention_s_per_mp2 == 0.0
    for images, other in ((2, Workload(256, 256, 12)), (2, Workload(64, 64, 12)), (1, Workload(128, 128, 4))):
        assert abs(plain.predict(images, other) / TINY_CPU.predict(images, other) - 1) > 0.15


@pytest.mark.parametrize(
    ("slower", "budget_s", "asked"),
    [
        (1.0, 10.0, Workload(128, 128, 12)),  # 64x64 is also a probe size
        (0.05, 10.0, Workload(512, 512, 20)),
        (10.0, 5.0, Workload(128, 128, 12)),  # so slow that only the asked size fits, at the fewest steps
    ],
)
def test_the_benchmark_times_what_identifies_each_term(
    monkeypatch: pytest.MonkeyPatch, slower: float, budget_s: float, asked: Workload
) -> None:
    """Against a worker whose time is a known model, the benchmark recovers it, within its budget."""
    truth = CostModel.from_terms([slower * t for t in TINY_CPU.terms])
    clock = SimpleNamespace(now=0.0)
    requests: list[tuple[int, int, int, int]] = []

    def generate(kind: str, payload: dict[str, Any], read_s: float) -> dict[str, Any]:
        workload = Workload(payload["width"], payload["height"], payload["steps"])
        requests.append((workload.width, workload.height, workload.steps, payload["batch_size"]))
        clock.now += truth.predict(payload["batch_size"], workload) * (3 if len(requests) == 1 else 1)
        return {}

    monkeypatch.setattr(benchmark.time, "monotonic", lambda: clock.now)
    member = SimpleNamespace(
        name="w",
        client=SimpleNamespace(generate=generate),
        config=SimpleNamespace(caps=SimpleNamespace(max_pixels=None)),
        record_error=lambda error: None,
    )
    outcome = benchmark.benchmark_member(member, asked, budget_s=budget_s)  # type: ignore[arg-type]
    assert outcome.cost is not None and outcome.record is not None, outcome.error
    if slower >= 1.5:  # too slow for every size within the budget: timed at the asked size only, and still right there
        assert {(w, h) for w, h, _, _ in requests} == {(asked.width, asked.height)}
        for images in (1, 4):
            assert outcome.cost.predict(images, asked) == pytest.approx(truth.predict(images, asked), rel=0.02)
        return
    for name, fitted, true in zip(TERMS, outcome.cost.terms, truth.terms, strict=True):
        assert fitted == pytest.approx(true, rel=1e-4), name
    sizes = {(w, h) for w, h, _, _ in requests}
    probes = benchmark.probe_sizes(asked)
    assert sizes == {(asked.width, asked.height), (64, 64), *probes}
    timed_steps = {s for w, h, s, _ in requests if (w, h) != (64, 64)} - {1, benchmark.PROBE_STEPS}
    assert len(timed_steps) <= 1
    steps = timed_steps.pop() if timed_steps else benchmark.PROBE_STEPS
    assert benchmark.MIN_STEPS <= steps <= asked.steps  # as many as the budget allows
    # a 64x64 image at one step and at the asked steps shows the per-request costs almost alone
    assert {(1, 1), (asked.steps, 1)} <= {(s, n) for w, h, s, n in requests if (w, h) == (64, 64)}
    # a warm-up, then each timed request two or three times, within the budget
    per_turn = len(benchmark.SHORT_BATCHES) + 1 + len(benchmark._plan(asked, steps, None))
    assert (len(requests) - 1) % per_turn == 0 and (len(requests) - 1) // per_turn in (2, 3)
    assert outcome.record.seconds <= budget_s


def test_the_benchmark_tolerates_timing_noise() -> None:
    """Timings a few percent off, some spiking, each request timed twice: predictions after a change stay close.
    The 64x64 requests carry this: without them, 64x64 at 20 steps is predicted about 30% off (median)."""
    rng = random.Random(7)
    asked = Workload(256, 256, 20)
    design = benchmark_design(asked, benchmark.MIN_STEPS)  # a slow worker: the fewest steps fit its budget
    changes = [Workload(64, 64, 20), Workload(512, 512, 20), Workload(256, 256, 4), Workload(256, 256, 30)]

    def timed(images: int, workload: Workload) -> float:
        true = TINY_CPU.predict(images, workload)
        return min(true * rng.lognormvariate(0, 0.03) * (1 + (rng.random() < 0.15) * rng.random()) for _ in "ab")

    worst = []
    for _ in range(25):
        model = CostModel.fit([Observation(n, w, timed(n, w)) for n, w in design])
        worst.append(max(abs(model.predict(2, w) / TINY_CPU.predict(2, w) - 1) for w in changes))
    assert statistics.median(worst) < 0.12


def test_probe_sizes_stay_within_what_a_webui_and_a_gpu_allow() -> None:
    assert benchmark.probe_sizes(Workload(512, 512, 20)) == [(256, 256), (768, 768)]  # twice only up to 512x512
    assert benchmark.probe_sizes(Workload(128, 128, 12)) == [(64, 64), (256, 256)]
    assert benchmark.probe_sizes(Workload(1024, 1024, 20)) == [(512, 512), (256, 256)]  # nothing above 1 MP
    assert benchmark.probe_sizes(Workload(512, 512, 20), max_pixels=512 * 512) == [(256, 256), (128, 128)]
    assert benchmark.probe_sizes(Workload(64, 64, 4)) == [(128, 128), (96, 96)]  # 64 is the smallest side
    assert benchmark.probe_sizes(Workload(768, 512, 20)) == [(384, 256), (1152, 768)]  # twice: above 1 MP


def test_a_model_saved_before_the_new_terms_loads_as_it_predicted() -> None:
    old = {"overhead_s": 0.25, "seconds_per_unit": 0.4, "samples": 7, "error": 0.1, "measured_at": "512x512, 20 steps"}
    config = validate(FleetConfig, {"workers": [{"name": "a", "url": "http://a:7860", "cost_model": old}]})
    assert config.workers[0].cost_model is not None
    model = CostModel.from_state(config.workers[0].cost_model)
    assert model.terms[1:3] == (0.0, 0.0) and model.attention_s_per_mp2 == 0.0
    for images, workload in ((1, REFERENCE), (4, Workload(1024, 768, 30))):
        assert model.predict(images, workload) == pytest.approx(0.25 + images * workload.units * 0.4)
    assert validate(FleetConfig, {"learned": {"master": old}}).learned["master"].step_overhead_s == 0.0


def test_every_term_survives_a_save() -> None:
    saved = dump(TINY_CPU.to_state())
    assert set(TERMS) <= set(saved)
    again = CostModel.from_state(validate(CostModelState, saved))
    assert again.terms == pytest.approx(TINY_CPU.terms, rel=1e-6)


def test_refinement_rescales_each_group_and_keeps_the_benchmarks_shape() -> None:
    model = TINY_CPU.copy()
    truth = CostModel.from_terms([t * (1.5 if i < 2 else 2.0) for i, t in enumerate(TINY_CPU.terms)])
    for images in (1, 2, 4, 1, 4):
        model.observe(images, SMALL, truth.predict(images, SMALL))
    for images, workload in ((3, Workload(256, 256, 30)), (1, Workload(96, 160, 8))):
        assert model.predict(images, workload) == pytest.approx(truth.predict(images, workload), rel=1e-6)
    assert model.last_error is not None and model.last_error < 1e-6


def test_one_workload_only_keeps_the_request_terms_and_rescales_the_rest() -> None:
    model = TINY_CPU.copy()
    truth = CostModel.from_terms([*TINY_CPU.terms[:2], *(2 * t for t in TINY_CPU.terms[2:])])
    for _ in range(4):
        model.observe(2, SMALL, truth.predict(2, SMALL))
    assert model.terms[:2] == TINY_CPU.terms[:2]
    assert model.predict(4, Workload(256, 256, 30)) == pytest.approx(truth.predict(4, Workload(256, 256, 30)))


def test_a_model_without_overhead_can_learn_one() -> None:
    model = CostModel(0.0, 1.0)  # what importing the prior art's config gives
    for images in (1, 4, 2):
        model.observe(images, SMALL, 0.3 + images * SMALL.units * 2.0)
    assert model.overhead_s == pytest.approx(0.3) and model.seconds_per_unit == pytest.approx(2.0)


def test_resolution_and_steps_change_need_no_new_benchmark() -> None:
    truth = CostModel(0.05, 60.0)
    model = CostModel(0.05, 30.0)  # a stale guess, corrected by jobs at one size only
    for _ in range(4):
        model.observe(4, SMALL, truth.predict(4, SMALL))
    bigger = Workload(128, 128, 8)  # 8x the work per image
    assert model.predict(3, bigger) == pytest.approx(truth.predict(3, bigger), rel=0.01)
    assert model.error is not None and model.last_error is not None and model.last_error < 0.01


def test_error_is_tracked_before_learning() -> None:
    model = CostModel(0.0, 10.0)
    model.observe(1, SMALL, model.predict(1, SMALL) * 2)
    assert model.last_error == pytest.approx(0.5)


def test_ipm_is_quoted_at_512_20_steps() -> None:
    model = CostModel(0.5, 1.0 / REFERENCE.units)  # one second per reference image
    assert model.ipm() == pytest.approx(60.0)
    assert model.to_state().seconds_per_unit == model.seconds_per_unit


def test_hires_and_img2img_change_the_work() -> None:
    hires = Workload(512, 512, 20, hires_width=1024, hires_height=1024, hires_steps=10)
    assert hires.units > REFERENCE.units * 2
    assert Workload(512, 512, 20, denoising=0.5).units == pytest.approx(REFERENCE.units / 2)
    # the hires pass's steps count per request, its pixels for the decode and (squared) for attention
    assert hires.features(1) == pytest.approx((1.0, 30.0, 1.048576, hires.units, 0.262144**2 * 20 + 1.048576**2 * 10))


def test_the_prior_for_an_unmeasured_worker_scales_with_the_workload() -> None:
    small, reference, large = Workload(64, 64, 4), Workload(512, 512, 20), Workload(1024, 1024, 30)
    model = prior([], reference)
    assert model.per_image(reference) == pytest.approx(2.0)
    assert model.per_image(large) == pytest.approx(12.0)  # 4x the pixels, 1.5x the steps
    assert model.per_image(small) < 0.01


def test_the_prior_from_measured_workers_takes_each_terms_median() -> None:
    known = [TINY_CPU, CostModel.from_terms([2 * t for t in TINY_CPU.terms]), CostModel.from_terms([0.0, 0, 0, 0.1, 0])]
    assert prior(known, REFERENCE).terms == pytest.approx(TINY_CPU.terms)
