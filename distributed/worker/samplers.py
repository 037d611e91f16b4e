"""A1111 sampler and scheduler names mapped onto diffusers schedulers.

A1111 1.10 names a sampler ("DPM++ 2M") and, separately, a schedule type ("Karras"); the old combined names
("DPM++ 2M Karras") still work, split the way `sd_samplers.get_sampler_and_scheduler` splits them. "Automatic" means
the sampler's own default schedule (Karras for the DPM++ family, as in A1111).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    scheduler_class: type[SchedulerMixin]
    aliases: tuple[str, ...] = ()
    default_schedule: str = "uniform"
    extra_config: dict[str, Any] = field(default_factory=dict)
    # schedule types this diffusers scheduler can follow
    schedules: tuple[str, ...] = ("uniform",)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    label: str
    aliases: tuple[str, ...] = ()


_SIGMA_SCHEDULES = ("uniform", "karras", "exponential")

SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "DPM++ 2M",
        DPMSolverMultistepScheduler,
        ("k_dpmpp_2m",),
        "karras",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        _SIGMA_SCHEDULES,
    ),
    SamplerSpec(
        "DPM++ 2M SDE",
        DPMSolverMultistepScheduler,
        ("k_dpmpp_2m_sde",),
        "exponential",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        _SIGMA_SCHEDULES,
    ),
    SamplerSpec("Euler a", EulerAncestralDiscreteScheduler, ("k_euler_a", "k_euler_ancestral")),
    SamplerSpec("Euler", EulerDiscreteScheduler, ("k_euler",), schedules=_SIGMA_SCHEDULES),
    SamplerSpec("LMS", LMSDiscreteScheduler, ("k_lms",), schedules=("uniform", "karras")),
    SamplerSpec("Heun", HeunDiscreteScheduler, ("k_heun",), schedules=("uniform", "karras")),
    SamplerSpec("DDIM", DDIMScheduler, ("ddim",)),
    SamplerSpec("UniPC", UniPCMultistepScheduler, ("unipc",), schedules=_SIGMA_SCHEDULES),
    SamplerSpec("PLMS", PNDMScheduler, ("plms",), extra_config={"skip_prk_steps": True}),  # linear multistep, as LDM's
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
