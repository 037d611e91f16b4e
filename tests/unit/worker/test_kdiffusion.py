"""A1111's noise schedule, noise sources and sampler details, against values A1111 1.10.1 produces."""

from __future__ import annotations

import math

import pytest
import torch

from distributed.worker.kdiffusion import (
    K_SAMPLERS,
    DiscreteSchedule,
    SamplerParams,
    ancestral_step,
    karras,
    sigma_schedule,
)
from distributed.worker.noise import ImageNoise, PhiloxDraws


def test_schedule_matches_ldm() -> None:
    schedule = DiscreteSchedule.scaled_linear()
    assert schedule.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert schedule.sigma_max == pytest.approx(14.6146, abs=1e-4)
    # A1111's uniform schedule (k-diffusion's get_sigmas): t from 999 to 0 in n steps, then 0
    sigmas = schedule.uniform(4)
    assert sigmas.tolist() == pytest.approx([14.6146, 2.9183, 0.9324, 0.0292, 0.0], abs=1e-4)
    t = schedule.sigma_to_t(sigmas[:-1])
    assert t.tolist() == pytest.approx([999.0, 666.0, 333.0, 0.0], abs=1e-3)


def test_karras_and_discarded_penultimate() -> None:
    sigmas = karras(3, 0.1, 10.0)
    assert sigmas[0].item() == pytest.approx(10.0) and sigmas[2].item() == pytest.approx(0.1, rel=1e-5)
    schedule = DiscreteSchedule.scaled_linear()
    kept = sigma_schedule("karras", schedule, 4, discard_penultimate=True)
    assert len(kept) == 5 and kept[-1] == 0  # one more step planned, the one before zero dropped
    assert kept[-2] > sigma_schedule("karras", schedule, 5, False)[-2]


def test_ancestral_step_and_eta() -> None:
    down, up = ancestral_step(torch.tensor(2.0), torch.tensor(1.0), 1.0)
    assert down.item() ** 2 + up.item() ** 2 == pytest.approx(1.0)
    assert up.item() == pytest.approx(math.sqrt(0.75))
    down, up = ancestral_step(torch.tensor(2.0), torch.tensor(1.0), 0.0)
    assert down.item() == 1.0 and float(up) == 0.0


def test_nv_source_is_torch_cuda_randn() -> None:
    # the numbers torch.randn((3, 4), generator=cuda manual_seed(0)) gives on an NVIDIA GPU (A1111's rng_philox)
    expected = [
        [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
        [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
        [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
    ]
    assert torch.allclose(PhiloxDraws(0).randn((3, 4)), torch.tensor(expected), atol=1e-6)


def test_image_noise_per_image_and_ensd() -> None:
    shape = (4, 2, 2)
    batch = ImageNoise(shape, [5, 6], source="CPU")
    first, later = batch.first(), batch.next()
    single = ImageNoise(shape, [6], source="CPU")
    assert torch.equal(first[1], single.first()[0]) and torch.equal(later[1], single.next()[0])
    generator = torch.Generator().manual_seed(6)
    assert torch.equal(first[1], torch.randn(shape, generator=generator))
    delta = ImageNoise(shape, [6], source="CPU", ensd=31337)
    assert torch.equal(delta.first()[0], first[1])
    assert torch.equal(delta.next()[0], torch.randn(shape, generator=torch.Generator().manual_seed(6 + 31337)))
    with pytest.raises(ValueError, match="randn_source"):
        ImageNoise(shape, [1], source="TPU")


def test_euler_draws_noise_every_step_and_churn_uses_it() -> None:
    draws = []

    def noise() -> torch.Tensor:
        draws.append(1)
        return torch.ones(1, 1, 1, 1)

    sigmas = DiscreteSchedule.scaled_linear().uniform(4)
    x = torch.zeros(1, 1, 1, 1)

    def model(latent: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return latent * 0.5

    calm = K_SAMPLERS["euler"](model, x + 1, sigmas, SamplerParams(), noise, lambda i: False)
    assert len(draws) == 4  # A1111 lets Euler draw on every step, churn or not
    churned = K_SAMPLERS["euler"](model, x + 1, sigmas, SamplerParams(s_churn=1.0), noise, lambda i: False)
    assert not torch.equal(calm, churned)


@pytest.mark.parametrize("name", sorted(K_SAMPLERS))
def test_every_sampler_denoises_a_perfect_model(name: str) -> None:
    """With a model that always knows the clean latent, every sampler must land on it."""
    clean = torch.full((1, 4, 2, 2), 0.3)
    sigmas = sigma_schedule("karras", DiscreteSchedule.scaled_linear(), 6, discard_penultimate=False)
    start = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    generator = torch.Generator().manual_seed(2)
    result = K_SAMPLERS[name](
        lambda x, s: clean,
        start,
        sigmas,
        SamplerParams(),
        lambda: torch.randn(clean.shape, generator=generator),
        lambda i: False,
    )
    assert torch.allclose(result, clean, atol=1e-4)
