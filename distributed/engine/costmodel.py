"""How long a worker takes for a chunk of `images` images, each of one workload:

    seconds = overhead_s + step_overhead_s x steps                                    (once per request)
            + images x (decode_s_per_mp x MP + steps x (seconds_per_unit x MP + attention_s_per_mp2 x MP^2))

MP is megapixels. Timing the real tiny model on a CPU (no emulation) showed each term: a per-request cost, a
per-step cost shared by the whole batch (model launches, the scheduler), a per-image cost that does not grow with
steps (VAE decode, PNG), and a per-step cost that grows faster than the pixels (attention over the latent's tokens).
With megapixel-steps alone, a model fitted at 128x128 was about 45% off at 256x256 (`python -m distributed bench`
measures both on real compute, bench/realcompute.py). A benchmark times enough
workloads to fit every term (`fit`, non-negative least squares on relative error), so a change of resolution or steps
needs no new benchmark. After every finished chunk the model is refined from a window of recent observations: the
request terms and the image terms are rescaled, each group keeping the shape the benchmark found (one workload
cannot tell the terms apart). The relative error of each prediction is tracked before it is learned from. A model
saved before these terms existed loads with them at zero: megapixel-steps plus a per-request overhead.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from distributed.engine.config import CostModelState

MAX_OBSERVATIONS = 32
ERROR_SMOOTHING = 0.3
TERMS = ("overhead_s", "step_overhead_s", "decode_s_per_mp", "seconds_per_unit", "attention_s_per_mp2")
REQUEST_TERMS = (0, 1)  # scaled together by online refinement, as are the image terms
IMAGE_TERMS = (2, 3, 4)
SLOPE = 3  # seconds_per_unit: always positive, in every fit


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
    def passes(self) -> tuple[tuple[float, float], ...]:
        """(megapixels, steps) of each sampling pass: the base pass and the hires pass if any."""
        base = (self.width * self.height / 1e6, max(1.0, self.steps * self.denoising))
        if self.hires_steps > 0 and self.hires_width * self.hires_height > 0:
            return base, (self.hires_width * self.hires_height / 1e6, float(self.hires_steps))
        return (base,)

    @property
    def units(self) -> float:
        """Megapixel-steps of one image (the work the first cost models counted)."""
        return sum(mp * steps for mp, steps in self.passes)

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

    def features(self, images: int) -> tuple[float, ...]:
        """What each term of the cost model is multiplied by for a request of `images` images (TERMS' order)."""
        passes = self.passes
        return (
            1.0,
            sum(steps for _, steps in passes),
            images * self.pixels / 1e6,
            images * self.units,
            images * sum(mp * mp * steps for mp, steps in passes),
        )


REFERENCE = Workload(512, 512, 20)  # what "images per minute" is quoted at


@dataclass(frozen=True)
class Observation:
    images: int
    workload: Workload
    seconds: float


class CostModel:
    def __init__(
        self,
        overhead_s: float,
        seconds_per_unit: float,
        error: float | None = None,
        *,
        step_overhead_s: float = 0.0,
        decode_s_per_mp: float = 0.0,
        attention_s_per_mp2: float = 0.0,
    ) -> None:
        terms = (overhead_s, step_overhead_s, decode_s_per_mp, seconds_per_unit, attention_s_per_mp2)
        if seconds_per_unit <= 0 or min(terms) < 0 or not all(math.isfinite(t) for t in terms):
            raise ValueError("a cost model needs terms >= 0 and a positive cost per unit")
        self.terms: tuple[float, ...] = terms
        self.error = error  # smoothed relative prediction error; None until a prediction was checked
        self.last_error: float | None = None
        self.measured_at: str | None = None  # the workload it last learned from, in words
        self.observations: deque[Observation] = deque(maxlen=MAX_OBSERVATIONS)

    # the terms by name (TERMS' order); the first two are the cost model every older version saved
    @property
    def overhead_s(self) -> float:
        return self.terms[0]

    @property
    def step_overhead_s(self) -> float:
        return self.terms[1]

    @property
    def decode_s_per_mp(self) -> float:
        return self.terms[2]

    @property
    def seconds_per_unit(self) -> float:
        return self.terms[SLOPE]

    @property
    def attention_s_per_mp2(self) -> float:
        return self.terms[4]

    @classmethod
    def from_terms(cls, terms: Sequence[float], error: float | None = None) -> CostModel:
        overhead, step, decode, slope, attention = terms
        return cls(overhead, slope, error, step_overhead_s=step, decode_s_per_mp=decode, attention_s_per_mp2=attention)

    @classmethod
    def from_state(cls, state: CostModelState) -> CostModel:
        model = cls.from_terms([getattr(state, name) for name in TERMS], state.error)
        model.measured_at = state.measured_at
        return model

    def to_state(self) -> CostModelState:
        return CostModelState(
            overhead_s=round(self.overhead_s, 6),
            seconds_per_unit=self.seconds_per_unit,
            step_overhead_s=round(self.step_overhead_s, 9),
            decode_s_per_mp=round(self.decode_s_per_mp, 9),
            attention_s_per_mp2=round(self.attention_s_per_mp2, 9),
            samples=len(self.observations),
            error=None if self.error is None else round(self.error, 4),
            measured_at=self.measured_at,
        )

    def copy(self) -> CostModel:
        """The same terms, learning from scratch (no observations, no error yet)."""
        model = CostModel.from_terms(self.terms)
        model.measured_at = self.measured_at
        return model

    def overhead(self, workload: Workload) -> float:
        """Seconds a request costs whatever its batch size (the per-step part grows with the steps)."""
        return _dot(self.terms, workload.features(0))

    def per_image(self, workload: Workload) -> float:
        return _dot(self.terms, workload.features(1)) - self.overhead(workload)

    def predict(self, images: int, workload: Workload) -> float:
        if images <= 0:
            return 0.0
        return _dot(self.terms, workload.features(images))

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
        """Every term the observations can tell apart, by least squares on the relative error with all terms >= 0
        and the cost per unit > 0; a term the observations cannot separate from the others stays at zero. The
        benchmark times several batch sizes, two step counts and three resolutions, which separates all five."""
        points = [p for p in observations if p.images > 0 and p.seconds > 0 and math.isfinite(p.seconds)]
        if not points:
            raise ValueError("nothing to fit")
        rows = [[f / p.seconds for f in p.workload.features(p.images)] for p in points]
        terms = _nonnegative_least_squares(rows, [1.0] * len(rows), required=SLOPE)
        model = cls.from_terms(terms) if terms is not None else cls(0.0, 1.0)
        model.observations.extend(points)
        if terms is None:  # every term at once is ill-posed here: fall back to overhead and slope
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
        self.observations.append(Observation(images, workload, seconds))
        self.measured_at = workload.label
        self._refit()

    def _refit(self) -> None:
        """Rescale the request terms by `a` and the image terms by `b` to fit the window: seconds = a x request +
        b x images, a line in (images / request, seconds / request) fitted on relative error. Request terms that
        are all zero stand for a plain per-request overhead, so one can be learned."""
        points = list(self.observations)
        request = [self._group(REQUEST_TERMS, p) for p in points]
        image = [self._group(IMAGE_TERMS, p) for p in points]
        basis = [r if r > 0 else 1.0 for r in request]
        xs = [i / r for i, r in zip(image, basis, strict=True)]
        ys = [p.seconds / r for p, r in zip(points, basis, strict=True)]
        weights = [(r / p.seconds) ** 2 for p, r in zip(points, basis, strict=True)]
        spread = max(xs) / min(xs) if min(xs) > 0 else math.inf
        line = _weighted_line(xs, ys, weights) if len(points) >= 2 and spread >= 1.2 else None
        scales: tuple[float | None, float]
        if line is not None:
            scales = line
        else:  # one workload shape only: keep the overhead, explain the rest (median, robust to a hiccup)
            ratios = sorted(
                max(p.seconds - r, 0.05 * p.seconds) / i for p, r, i in zip(points, request, image, strict=True)
            )
            scales = (None, ratios[len(ratios) // 2])
        a, b = scales
        scaled = list(self.terms)
        if a is not None and max(self.terms[i] for i in REQUEST_TERMS) > 0:
            for i in REQUEST_TERMS:
                scaled[i] *= a
        elif a is not None:
            scaled[0] = a
        for i in IMAGE_TERMS:
            scaled[i] *= b
        if scaled[SLOPE] > 0 and all(math.isfinite(t) for t in scaled):
            self.terms = tuple(scaled)

    def _group(self, group: tuple[int, ...], point: Observation) -> float:
        features = point.workload.features(point.images)
        return sum(self.terms[i] * features[i] for i in group)


def _weighted_line(xs: list[float], ys: list[float], weights: list[float]) -> tuple[float, float] | None:
    """(intercept, slope) of y = intercept + slope x with slope > 0 and intercept >= 0 (pinned at zero when the line
    wants it negative); None when the slope is not positive."""
    total = sum(weights)
    mean_x = sum(w * x for w, x in zip(weights, xs, strict=True)) / total
    mean_y = sum(w * y for w, y in zip(weights, ys, strict=True)) / total
    sxx = sum(w * (x - mean_x) ** 2 for w, x in zip(weights, xs, strict=True))
    slope = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in zip(weights, xs, ys, strict=True)) / sxx
    if slope <= 0:
        return None
    if mean_y - slope * mean_x >= 0:
        return mean_y - slope * mean_x, slope
    through_zero = sum(w * x * y for w, x, y in zip(weights, xs, ys, strict=True))
    return 0.0, through_zero / sum(w * x * x for w, x in zip(weights, xs, strict=True))


def _dot(terms: Sequence[float], features: Sequence[float]) -> float:
    return sum(t * f for t, f in zip(terms, features, strict=True))


def _nonnegative_least_squares(rows: list[list[float]], targets: list[float], required: int) -> list[float] | None:
    """min |rows x coefficients - targets| with coefficients >= 0 and coefficients[required] > 0; None if no such
    solution is well-posed. The optimum is the unconstrained solution on some set of free terms, so with five terms
    trying all 16 sets that hold `required` finds it exactly."""
    width = len(rows[0])
    others = [i for i in range(width) if i != required]
    best: tuple[float, list[float]] | None = None
    for size in range(len(others) + 1):
        for chosen in itertools.combinations(others, size):
            free = sorted((required, *chosen))
            if len(free) > len(rows):
                continue
            solution = _least_squares([[row[i] for i in free] for row in rows], targets)
            if solution is None or min(solution) < 0 or solution[free.index(required)] <= 0:
                continue
            coefficients = [0.0] * width
            for i, value in zip(free, solution, strict=True):
                coefficients[i] = value
            residual = sum((_dot(coefficients, row) - t) ** 2 for row, t in zip(rows, targets, strict=True))
            if best is None or residual < best[0] * (1 - 1e-9):
                best = (residual, coefficients)
    return None if best is None else best[1]


def _least_squares(rows: list[list[float]], targets: list[float]) -> list[float] | None:
    """Normal equations by Gaussian elimination; None when the columns are (nearly) dependent."""
    n = len(rows[0])
    norms = [math.sqrt(sum(row[i] ** 2 for row in rows)) for i in range(n)]
    if min(norms) <= 0:
        return None
    scaled = [[row[i] / norms[i] for i in range(n)] for row in rows]  # unit columns: the pivot test is scale-free
    matrix = [[sum(r[i] * r[j] for r in scaled) for j in range(n)] for i in range(n)]
    for i in range(n):
        matrix[i].append(sum(r[i] * t for r, t in zip(scaled, targets, strict=True)))
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(matrix[r][col]))
        if abs(matrix[pivot][col]) < 1e-10:
            return None
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        for r in range(n):
            if r != col:
                factor = matrix[r][col] / matrix[col][col]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[col], strict=True)]
    return [matrix[i][n] / matrix[i][i] / norms[i] for i in range(n)]


PRIOR_REFERENCE_S = 2.0  # a worker nobody has measured: 2 s for a 512x512, 20-step image (a mid-range GPU)


def prior(known: list[CostModel], workload: Workload) -> CostModel:
    """For a worker that has not shown its speed: the median of each term over those that have, or
    PRIOR_REFERENCE_S per reference image scaled by the workload (pixels x steps) plus 0.2 s per request. Only a
    starting point: deadlines also grow while a worker shows progress, so a slower worker is not declared dead."""
    if not known:
        return CostModel(0.2, PRIOR_REFERENCE_S / REFERENCE.units)
    return CostModel.from_terms([statistics.median(c.terms[i] for c in known) for i in range(len(TERMS))])
