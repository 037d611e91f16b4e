from __future__ import annotations

import pytest

from distributed.worker.samplers import SAMPLERS, UnknownSamplerError, make_scheduler, resolve


@pytest.mark.parametrize(
    ("name", "scheduler", "sampler", "label", "effective"),
    [
        (None, None, "Euler", "Automatic", "uniform"),
        ("DPM++ 2M", None, "DPM++ 2M", "Automatic", "karras"),
        ("DPM++ 2M Karras", None, "DPM++ 2M", "Karras", "karras"),
        ("DPM++ 2M", "Uniform", "DPM++ 2M", "Uniform", "uniform"),
        ("DPM++ 2M", "exponential", "DPM++ 2M", "Exponential", "exponential"),
        ("k_dpmpp_2m", None, "DPM++ 2M", "Automatic", "karras"),
        ("Euler a", None, "Euler a", "Automatic", "uniform"),
        ("DDIM", "Automatic", "DDIM", "Automatic", "uniform"),
    ],
)
def test_resolves_a1111_names(
    name: str | None, scheduler: str | None, sampler: str, label: str, effective: str
) -> None:
    choice = resolve(name, scheduler)
    assert (choice.sampler.name, choice.schedule.label, choice.effective_schedule) == (sampler, label, effective)


@pytest.mark.parametrize(
    ("name", "scheduler", "field"),
    [("Nope", None, "sampler_name"), ("Euler", "Wobbly", "scheduler"), ("DDIM", "Karras", "scheduler")],
)
def test_unknown_names_name_the_field(name: str, scheduler: str | None, field: str) -> None:
    with pytest.raises(UnknownSamplerError) as raised:
        resolve(name, scheduler)
    assert raised.value.field == field


def test_every_diffusers_sampler_builds_a_scheduler() -> None:
    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    for spec in SAMPLERS:
        if spec.engine != "diffusers":
            continue
        for schedule in spec.schedules:
            scheduler = make_scheduler(resolve(spec.name, schedule), config)
            scheduler.set_timesteps(6)
            assert len(scheduler.timesteps) >= 6
