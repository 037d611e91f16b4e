from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributed.engine.costmodel import REFERENCE, CostModel, Observation, Workload

SMALL = Workload(64, 64, 4)


@given(overhead=st.floats(0.0, 3.0), per_unit=st.floats(0.01, 100.0))
def test_fit_recovers_overhead_and_slope(overhead: float, per_unit: float) -> None:
    points = [Observation(u, overhead + u * per_unit) for u in (0.5, 1.0, 2.0, 4.0)]
    model = CostModel.fit(points)
    assert model.overhead_s == pytest.approx(overhead, abs=1e-6 + 1e-6 * per_unit)
    assert model.seconds_per_unit == pytest.approx(per_unit, rel=1e-6)


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
    assert Workload(512, 512, 20, hires_width=1024, hires_height=1024, hires_steps=10).units > REFERENCE.units * 2
    assert Workload(512, 512, 20, denoising=0.5).units == pytest.approx(REFERENCE.units / 2)


def test_the_prior_for_an_unmeasured_worker_scales_with_the_workload() -> None:
    from distributed.engine.costmodel import prior

    small, reference, large = Workload(64, 64, 4), Workload(512, 512, 20), Workload(1024, 1024, 30)
    model = prior([], reference)
    assert model.per_image(reference) == pytest.approx(2.0)
    assert model.per_image(large) == pytest.approx(12.0)  # 4x the pixels, 1.5x the steps
    assert model.per_image(small) < 0.01
