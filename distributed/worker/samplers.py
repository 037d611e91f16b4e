"""A1111's samplers and schedule types: which algorithm renders each name, and how names are split.

Most samplers run A1111's own algorithms (kdiffusion.py, and A1111's DDIM in pipeline.py), so their images equal an
A1111's for the same seed; DPM++ 2M SDE, UniPC and PLMS run diffusers' versions (close, not the same bytes).

A1111 1.10 names a sampler ("DPM++ 2M") and, separately, a schedule type ("Karras"); the old combined names
("DPM++ 2M Karras") still work, split the way `sd_samplers.get_sampler_and_scheduler` splits them. "Automatic" means
the sampler's own default schedule (Karras for the DPM++ family, as in A1111).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import DPMSolverMultistepScheduler, PNDMScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    # "k": k-diffusion's algorithm (kdiffusion.K_SAMPLERS[k_name]); "ddim": A1111's DDIM; "diffusers": the class below
    engine: str
    aliases: tuple[str, ...] = ()
    default_schedule: str = "uniform"
    k_name: str = ""
    scheduler_class: type[SchedulerMixin] | None = None
    extra_config: dict[str, Any] = field(default_factory=dict)
    # schedule types this sampler can follow
    schedules: tuple[str, ...] = ("uniform",)
    discard_penultimate: bool = False
    uses_eta: bool = False  # ancestral: eta and s_noise apply; A1111's default eta for them is 1
    uses_churn: bool = False  # s_churn, s_tmin, s_tmax, s_noise apply
    second_order: bool = False  # two model calls per step: prompt editing counts steps twice, as in A1111

    @property
    def same_as_a1111(self) -> bool:
        """Renders A1111's image for the same seed (the others are diffusers' versions of the algorithm)."""
        return self.engine != "diffusers"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    label: str
    aliases: tuple[str, ...] = ()


_SIGMA_SCHEDULES = ("uniform", "karras", "exponential")

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", "k", ("k_dpmpp_2m",), "karras", "dpmpp_2m", schedules=_SIGMA_SCHEDULES),
    SamplerSpec(
        "DPM++ 2M SDE",
        "diffusers",
        ("k_dpmpp_2m_sde",),
        "exponential",
        scheduler_class=DPMSolverMultistepScheduler,
        extra_config={"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        schedules=_SIGMA_SCHEDULES,
    ),
    SamplerSpec(
        "DPM++ 2S a",
        "k",
        ("k_dpmpp_2s_a",),
        "karras",
        "dpmpp_2s_ancestral",
        schedules=_SIGMA_SCHEDULES,
        uses_eta=True,
        second_order=True,
    ),
    SamplerSpec(
        "Euler a",
        "k",
        ("k_euler_a", "k_euler_ancestral"),
        k_name="euler_ancestral",
        schedules=_SIGMA_SCHEDULES,
        uses_eta=True,
    ),
    SamplerSpec("Euler", "k", ("k_euler",), k_name="euler", schedules=_SIGMA_SCHEDULES, uses_churn=True),
    SamplerSpec("LMS", "k", ("k_lms",), k_name="lms", schedules=_SIGMA_SCHEDULES),
    SamplerSpec(
        "Heun", "k", ("k_heun",), k_name="heun", schedules=_SIGMA_SCHEDULES, uses_churn=True, second_order=True
    ),
    SamplerSpec(
        "DPM2",
        "k",
        ("k_dpm_2",),
        "karras",
        "dpm_2",
        schedules=_SIGMA_SCHEDULES,
        discard_penultimate=True,
        uses_churn=True,
        second_order=True,
    ),
    SamplerSpec(
        "DPM2 a",
        "k",
        ("k_dpm_2_a",),
        "karras",
        "dpm_2_ancestral",
        schedules=_SIGMA_SCHEDULES,
        discard_penultimate=True,
        uses_eta=True,
        second_order=True,
    ),
    SamplerSpec("DDIM", "ddim", ("ddim",), uses_eta=True),
    SamplerSpec("UniPC", "diffusers", ("unipc",), scheduler_class=UniPCMultistepScheduler, schedules=_SIGMA_SCHEDULES),
    # linear multistep, as LDM's
    SamplerSpec("PLMS", "diffusers", ("plms",), scheduler_class=PNDMScheduler, extra_config={"skip_prk_steps": True}),
)

SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("automatic", "Automatic"),
    ScheduleSpec("uniform", "Uniform"),
    ScheduleSpec("karras", "Karras"),
    ScheduleSpec("exponential", "Exponential"),
)

_SAMPLER_BY_NAME = {n: s for s in SAMPLERS for n in (s.name, *s.aliases)}
_SCHEDULE_BY_NAME = {n: s for s in SCHEDULES for n in (s.name, s.label, *s.aliases)}


class UnknownSamplerError(ValueError):
    """A sampler or schedule name this worker does not have; `field` names the request field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class SamplerChoice:
    sampler: SamplerSpec
    schedule: ScheduleSpec  # as requested ("automatic" stays automatic, like A1111's infotext)

    @property
    def effective_schedule(self) -> str:
        return self.sampler.default_schedule if self.schedule.name == "automatic" else self.schedule.name


def resolve(sampler_name: str | None, scheduler_name: str | None) -> SamplerChoice:
    """Split and validate an A1111 sampler/scheduler pair, as `sd_samplers.get_sampler_and_scheduler` does."""
    name = sampler_name or "Euler"
    schedule = _SCHEDULE_BY_NAME.get(scheduler_name or "automatic")
    if schedule is None:
        known = ", ".join(s.label for s in SCHEDULES)
        raise UnknownSamplerError("scheduler", f"unknown scheduler {scheduler_name!r}; this worker has: {known}")
    if name not in _SAMPLER_BY_NAME:
        for candidate in SCHEDULES:
            for option in (candidate.label, candidate.name, *candidate.aliases):
                if name.endswith(" " + option) and name[: -len(option) - 1] in _SAMPLER_BY_NAME:
                    name, schedule = name[: -len(option) - 1], candidate
                    break
    sampler = _SAMPLER_BY_NAME.get(name)
    if sampler is None:
        known = ", ".join(s.name for s in SAMPLERS)
        raise UnknownSamplerError("sampler_name", f"unknown sampler {sampler_name!r}; this worker has: {known}")
    choice = SamplerChoice(sampler, schedule)
    if choice.effective_schedule not in sampler.schedules:
        raise UnknownSamplerError(
            "scheduler", f"sampler {sampler.name!r} cannot use the {schedule.label!r} schedule on this worker"
        )
    return choice


def make_scheduler(choice: SamplerChoice, model_config: dict[str, Any]) -> SchedulerMixin:
    """A fresh diffusers scheduler for one batch (schedulers hold per-run state, so never share one)."""
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    config.update(choice.sampler.extra_config)
    schedule = choice.effective_schedule
    if schedule == "karras":
        config["use_karras_sigmas"] = True
    elif schedule == "exponential":
        config["use_exponential_sigmas"] = True
    if choice.sampler.scheduler_class is None:
        raise ValueError(f"{choice.sampler.name} is not a diffusers sampler")
    scheduler: SchedulerMixin = choice.sampler.scheduler_class.from_config(config)
    return scheduler


def sampler_listing() -> list[dict[str, Any]]:
    """The /sdapi/v1/samplers answer, shaped like A1111's."""
    return [
        {"name": s.name, "aliases": list(s.aliases), "options": {"scheduler": s.default_schedule}} for s in SAMPLERS
    ]


def schedule_listing() -> list[dict[str, Any]]:
    """The /sdapi/v1/schedulers answer, shaped like A1111's."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) or None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for s in SCHEDULES
    ]
