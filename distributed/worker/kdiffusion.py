"""Noise schedules and samplers as A1111 1.10.1 runs them (k-diffusion's algorithms, written here from the papers'
update rules and k-diffusion's published behaviour; its PyPI package pulls torchvision and wandb).

A denoiser maps (x, sigma per image) to the denoised prediction. Sigmas live on the CPU as float32 0-d tensors and
every update is the same tensor arithmetic in the same order as A1111's, so the bytes agree. `noise()` is one more
draw per image from the batch's ImageNoise (A1111 replaces k-diffusion's `torch.randn_like` with exactly that), and
samplers that A1111 lets draw noise on every step (Euler, Heun, DPM2 call it even without churn) do so here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseDraw = Callable[[], torch.Tensor]
# called after each step's first model evaluation with the step index; True stops sampling
StepCallback = Callable[[int], bool]


class DiscreteSchedule:
    """CompVis's 1000 training noise levels: sigma = sqrt((1 - alpha_bar) / alpha_bar), interpolated in log sigma."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> DiscreteSchedule:
        """ldm's "linear" beta schedule (linear in sqrt(beta)), built in float64 then stored as float32, as ldm does."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
        alphas_cumprod = np.cumprod(1.0 - betas.numpy(), axis=0)
        return cls(torch.tensor(alphas_cumprod, dtype=torch.float32))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0].item())

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1].item())

    def uniform(self, n: int) -> torch.Tensor:
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return _append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        log_sigmas = self.log_sigmas.to(sigma.device)
        dists = log_sigma - log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()


def _append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def sigma_schedule(schedule: str, model: DiscreteSchedule, steps: int, discard_penultimate: bool) -> torch.Tensor:
    """A1111's KDiffusionSampler.get_sigmas for the schedule types this worker has."""
    count = steps + (1 if discard_penultimate else 0)
    if schedule == "karras":
        sigmas = karras(count, model.sigma_min, model.sigma_max)
    elif schedule == "exponential":
        sigmas = exponential(count, model.sigma_min, model.sigma_max)
    else:
        sigmas = model.uniform(count)
    if discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


@dataclass(frozen=True)
class SamplerParams:
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (x - denoised) / sigma.to(x.device).reshape(-1, *([1] * (x.ndim - 1)))


def _batch(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sigma * x.new_ones([x.shape[0]]).cpu()


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not eta:
        return sigma_to, torch.zeros(())
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def _churn(
    x: torch.Tensor, sigmas: torch.Tensor, i: int, params: SamplerParams, noise: NoiseDraw
) -> tuple[torch.Tensor, torch.Tensor]:
    gamma = min(params.s_churn / (len(sigmas) - 1), 2**0.5 - 1) if params.s_tmin <= sigmas[i] <= params.s_tmax else 0.0
    eps = noise() * params.s_noise
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def sample_euler(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, p, noise)
        denoised = model(x, _batch(sigma_hat, x))
        if callback(i):
            return denoised
        x = x + _to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


def sample_euler_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(sigmas[i], x))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], p.eta)
        if callback(i):
            return denoised
        x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise() * p.s_noise * sigma_up
    return x


def sample_heun(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, p, noise)
        denoised = model(x, _batch(sigma_hat, x))
        d = _to_d(x, sigma_hat, denoised)
        if callback(i):
            return denoised
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model(x_2, _batch(sigmas[i + 1], x)))
            x = x + (d + d_2) / 2 * dt
    return x


def sample_dpm_2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, p, noise)
        denoised = model(x, _batch(sigma_hat, x))
        d = _to_d(x, sigma_hat, denoised)
        if callback(i):
            return denoised
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = _to_d(x_2, sigma_mid, model(x_2, _batch(sigma_mid, x)))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def sample_dpm_2_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(sigmas[i], x))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], p.eta)
        if callback(i):
            return denoised
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model(x_2, _batch(sigma_mid, x)))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise() * p.s_noise * sigma_up
    return x


def _lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """The integral over [t_i, t_i+1] of the Lagrange basis polynomial for node j (exact; k-diffusion uses quad)."""
    poly = np.polynomial.Polynomial([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.polynomial.Polynomial([-t[i - k], 1.0]) / (t[i - j] - t[i - k])
    antiderivative = poly.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


def sample_lms(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    order = 4
    nodes = sigmas.double().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(sigmas[i], x))
        ds = [*ds, _to_d(x, sigmas[i], denoised)][-order:]
        if callback(i):
            return denoised
        current = min(i + 1, order)
        coefficients = [_lms_coefficient(current, nodes, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(ds), strict=False))  # type: ignore[misc]
    return x


def sample_dpmpp_2s_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(sigmas[i], x))
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], p.eta)
        if callback(i):
            return denoised
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (s.neg().exp() / t.neg().exp()) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, _batch(s.neg().exp(), x))
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise() * p.s_noise * sigma_up
    return x


def sample_dpmpp_2m(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, p: SamplerParams, noise: NoiseDraw, callback: StepCallback
) -> torch.Tensor:
    old_denoised: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, _batch(sigmas[i], x))
        if callback(i):
            return denoised
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            mixed = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * mixed
        old_denoised = denoised
    return x


SamplerFunction = Callable[[Denoiser, torch.Tensor, torch.Tensor, SamplerParams, NoiseDraw, StepCallback], torch.Tensor]

K_SAMPLERS: dict[str, SamplerFunction] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2m": sample_dpmpp_2m,
}
