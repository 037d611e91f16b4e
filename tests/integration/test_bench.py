"""The benchmark command runs end to end (quick mode) and reports ratios measured in its own run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distributed.bench.fleets import FleetShape, equal_shares, proportional_shares
from distributed.engine.costmodel import TERMS, Workload


def test_bench_quick_runs_and_reports(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "distributed",
        "bench",
        "--quick",
        "--fleets",
        "unequal",
        "--sizes",
        "4",
        "--out",
        str(tmp_path),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "| unequal 5:2:1 | 4 |" in report
    assert (tmp_path / "batches.png").stat().st_size > 1000
    last = finished.stdout.strip().splitlines()
    assert last[-2].split()[:3] == ["unequal", "5:2:1", "4"]
    assert last[-1].startswith("goal never slower than the fastest alone")


def test_baseline_splits_cover_every_image() -> None:
    assert equal_shares(["a", "b", "c"], 10) == {"a": 4, "b": 3, "c": 3}

    class Rated:
        """Stands in for a LocalFleet: only the benchmarked rates matter to the split."""

        shape = FleetShape("t", {"a": 3.0, "b": 1.0})

        @property
        def workers(self) -> dict[str, None]:
            return {"a": None, "b": None}

        @staticmethod
        def rate(name: str) -> float:
            return {"a": 3.0, "b": 1.0}[name]

    assert proportional_shares(Rated(), 10) == {"a": 8, "b": 2}  # type: ignore[arg-type]


def test_prediction_error_on_real_compute_is_measured_and_reported_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real tiny-model worker (no emulation) is benchmarked once and timed after a change; its rows and its goal are
    labelled apart from the emulated ones."""
    from distributed.bench import realcompute
    from distributed.bench.measures import EMULATED, PredictionRow
    from distributed.bench.report import Report

    cheap = {"steps 12->4": Workload(128, 128, 4), "both: 64x64, 4 steps": Workload(64, 64, 4)}
    monkeypatch.setattr(realcompute, "CHANGES", cheap)
    monkeypatch.setattr(realcompute, "REPEATS", 1)
    real = realcompute.real_compute_errors(tmp_path, budget_s=3.0)
    assert [r.change for r in real.rows] == list(cheap) and {r.compute for r in real.rows} == {realcompute.REAL}
    assert all(r.predicted_s > 0 and r.actual_s > 0 and r.baseline_s for r in real.rows)
    assert set(real.terms) == set(TERMS) and real.terms["seconds_per_unit"] > 0
    assert len(real.timings) >= 7  # the benchmark's requests: batch sizes, two step counts, three sizes
    report = Report(predictions=[PredictionRow("steps 4->16", "fast", 1.0, 1.02)], real=real)
    goals = {g.name: g for g in report.goals()}
    assert f"prediction error, no new benchmark: {EMULATED}" in goals
    assert f"prediction error, no new benchmark: {realcompute.REAL}" in goals
    text = report.markdown()
    assert f"| {realcompute.REAL} | steps 12->4 | tiny |" in text and f"| {EMULATED} | steps 4->16 | fast |" in text
