"""`benchmark` within its budget: a worker too slow for it is interrupted and told what to change; a fast one is
measured and saved, and the command says where."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import requests

from distributed.cli.localfleet import LocalWorker, start_all


def _benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "distributed", "benchmark", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_a_worker_too_slow_for_the_budget_is_interrupted_and_told_what_to_change(tmp_path: Path) -> None:
    slow, fast = LocalWorker("slow", emulate_ipm=12, threads=1), LocalWorker("fast", emulate_ipm=600, threads=1)
    start_all([slow, fast])
    try:
        config = tmp_path / "workers.json"
        config.write_text(
            json.dumps({"workers": [{"name": "slow", "url": slow.url}, {"name": "fast", "url": fast.url}]})
        )
        # 128x128: one step on `slow` takes 5 s, more than the warm-up's 3 budgets of 1 s
        done = _benchmark("--config", str(config), "--width", "128", "--height", "128", "--steps", "4", "--budget", "1")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "slow: failed" in done.stdout and "interrupted on the worker" in done.stdout
        assert "--width 64 --height 64" in done.stdout and "longer --budget" in done.stdout
        assert "fast: " in done.stdout and "images/min at 128x128" in done.stdout
        assert f"saved 1 measured speeds to {config}" in done.stdout
        saved = {w["name"]: w for w in json.loads(config.read_text())["workers"]}
        assert saved["fast"]["cost_model"] is not None and saved["slow"]["cost_model"] is None
        idle = threading.Event()
        idle.wait(0.5)  # the interrupt lands within the worker's current step
        state = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=5).json()["state"]
        assert not state["job_count"], "the abandoned warm-up kept rendering"
    finally:
        slow.stop()
        fast.stop()
