"""How long a worker takes: seconds for a chunk = overhead + images x work per image x seconds per unit.

Work is counted in megapixel-steps (width x height / 1e6 x steps, plus the hires pass), so a change of resolution or
steps needs no new benchmark. The model is fitted from a benchmark and refined after every finished chunk from a
window of recent observations; the relative error of each prediction is tracked before it is learned from.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import deque
from dataclasses import dataclass

from distributed.engine.config import CostModelState

MAX_OBSERVATIONS = 32
ERROR_SMOOTHING = 0.3


@dataclass(frozen=True)
class Workload:
    """What one image costs to make, independent of the machine."""

    width: int
    height: int
    steps: int
    hires_width: int = 0
    hires_height: int = 0
    hires_steps: int = 0
    denoising: float = 1.0  # img2img runs only this fraction of the steps

    @property
    def units(self) -> float:
        steps = max(1.0, self.steps * self.denoising)
        base = self.width * self.height / 1e6 * steps
        hires = self.hires_width * self.hires_height / 1e6 * self.hires_steps
        return base + hires

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}, {self.steps} steps"

    @classmethod
    def from_label(cls, label: str | None) -> Workload | None:
        found = re.fullmatch(r"(\d+)x(\d+), (\d+) steps", label or "")
        return cls(*(int(v) for v in found.groups())) if found else None

    @property
    def pixels(self) -> int:
        return max(self.width * self.height, self.hires_width * self.hires_height)


REFERENCE = Workload(512, 512, 20)  # what "images per minute" is quoted at


@dataclass(frozen=True)
class Observation:
    units: float  # images x units per image
    seconds: float


class CostModel:
    def __init__(self, overhead_s: float, seconds_per_unit: float, error: float | None = None) -> None:
        if seconds_per_unit <= 0 or overhead_s < 0:
            raise ValueError("a cost model needs overhead >= 0 and a positive cost per unit")
        self.overhead_s = overhead_s
        self.seconds_per_unit = seconds_per_unit
        self.error = error  # smoothed relative prediction error; None until a prediction was checked
        self.last_error: float | None = None
        self.measured_at: str | None = None  # the workload it last learned from, in words
        self.observations: deque[Observation] = deque(maxlen=MAX_OBSERVATIONS)

    @classmethod
    def from_state(cls, state: CostModelState) -> CostModel:
        model = cls(state.overhead_s, state.seconds_per_unit, state.error)
        model.measured_at = state.measured_at
        return model

    def to_state(self) -> CostModelState:
        return CostModelState(
            overhead_s=round(self.overhead_s, 6),
            seconds_per_unit=self.seconds_per_unit,
            samples=len(self.observations),
            error=None if self.error is None else round(self.error, 4),
            measured_at=self.measured_at,
        )

    def per_image(self, workload: Workload) -> float:
        return workload.units * self.seconds_per_unit

    def predict(self, images: int, workload: Workload) -> float:
        if images <= 0:
            return 0.0
        return self.overhead_s + images * self.per_image(workload)

    def ipm(self, workload: Workload = REFERENCE) -> float:
        """Images per minute in large batches (the overhead spread thin)."""
        return 60.0 / self.per_image(workload)

    def describe(self) -> str:
        """The speed in words a person reads: at the size it last rendered (else 512x512, 20 steps)."""
        workload = Workload.from_label(self.measured_at) or REFERENCE
        seconds = self.per_image(workload)
        rate = f"{60.0 / seconds:.3g} images/min" if seconds < 60 else f"{seconds:.3g} s per image"
        return f"{rate} at {workload.label}"

    @classmethod
    def fit(cls, observations: list[Observation]) -> CostModel:
        """Least squares for seconds = overhead + units x slope, with overhead >= 0 and slope > 0."""
        if not observations:
            raise ValueError("nothing to fit")
        model = cls(0.0, 1.0)
        model.observations.extend(observations)
        model._refit()
        return model

    def observe(self, images: int, workload: Workload, seconds: float) -> None:
        """Learn from a finished chunk; the prediction made before learning sets the tracked error."""
        if images <= 0 or seconds <= 0 or not math.isfinite(seconds):
            return
        predicted = self.predict(images, workload)
        self.last_error = abs(predicted - seconds) / seconds
        self.error = (
            self.last_error
            if self.error is None
            else (1 - ERROR_SMOOTHING) * self.error + ERROR_SMOOTHING * self.last_error
        )
        self.observations.append(Observation(images * workload.units, seconds))
        self.measured_at = workload.label
        self._refit()

    def _refit(self) -> None:
        points = list(self.observations)
        xs = [p.units for p in points]
        ys = [p.seconds for p in points]
        spread = max(xs) / min(xs) if min(xs) > 0 else math.inf
        if len(points) >= 2 and spread >= 1.2:
            mean_x = sum(xs) / len(xs)
            mean_y = sum(ys) / len(ys)
            sxx = sum((x - mean_x) ** 2 for x in xs)
            slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
            overhead = mean_y - slope * mean_x
            if slope > 0 and overhead >= 0:
                self.overhead_s, self.seconds_per_unit = overhead, slope
                return
            if slope > 0:  # the line wants a negative overhead: pin it at zero
                self.overhead_s = 0.0
                self.seconds_per_unit = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
                return
        # one workload size only: keep the overhead, explain the rest by the slope (median, robust to a hiccup)
        slopes = sorted(max(y - self.overhead_s, 0.05 * y) / x for x, y in zip(xs, ys, strict=True) if x > 0)
        if slopes:
            self.seconds_per_unit = slopes[len(slopes) // 2]


PRIOR_REFERENCE_S = 2.0  # a worker nobody has measured: 2 s for a 512x512, 20-step image (a mid-range GPU)


def prior(known: list[CostModel], workload: Workload) -> CostModel:
    """For a worker that has not shown its speed: the median of those that have, or PRIOR_REFERENCE_S per reference
    image scaled by the workload (pixels x steps) plus 0.2 s per request. Only a starting point: deadlines also grow
    while a worker shows progress, so a slower worker is not declared dead."""
    if not known:
        return CostModel(0.2, PRIOR_REFERENCE_S / REFERENCE.units)
    return CostModel(
        statistics.median(c.overhead_s for c in known), statistics.median(c.seconds_per_unit for c in known)
    )
