"""The benchmark command runs end to end (quick mode) and reports ratios measured in its own run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from distributed.bench.fleets import FleetShape, equal_shares, proportional_shares


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
