"""`generate` as a daily tool: Ctrl-C writes what arrived and exits 130 at once, leaving no worker rendering; a
frozen worker does not hold the exit; abbreviated flags are refused; --help shows defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from distributed.cli.localfleet import LocalWorker, start_all

SIZE = ["--width", "64", "--height", "64", "--steps", "4"]


@pytest.fixture(scope="module")
def pair() -> Iterator[list[LocalWorker]]:
    workers = [LocalWorker("one", emulate_ipm=60, threads=1), LocalWorker("two", emulate_ipm=60, threads=1)]
    try:
        start_all(workers)
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def _command(workers: list[LocalWorker], out: Path, images: int, *extra: str) -> list[str]:
    remotes = [arg for w in workers for arg in ("--remote", f"{w.name}={w.url}")]
    return [sys.executable, "-m", "distributed", "generate", *remotes, "--prompt", "cli", "--images", str(images),
            *SIZE, "--seed", "7", "--out", str(out), *extra]  # fmt: skip


def _idle(worker: LocalWorker) -> bool:
    return not requests.get(f"{worker.url}/sdapi/v1/progress", timeout=5).json()["state"]["job_count"]


def test_ctrl_c_writes_what_arrived_and_stops_the_workers(pair: list[LocalWorker], tmp_path: Path) -> None:
    """40 images at 2 x 60 per minute take 20 s; Ctrl-C after 4 s."""
    process = subprocess.Popen(_command(pair, tmp_path, 40), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = threading.Event()
    stopped.wait(4.0)  # let some images arrive (a fixed pause, not a poll)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    took = time.monotonic() - sent
    print(f"exit {took:.2f} s after Ctrl-C")
    assert process.returncode == 130, err
    assert took < 2.0, took  # the goal is 1 s; margin for a loaded CI machine
    written = sorted(tmp_path.glob("*.png"))
    assert 2 <= len(written) < 40, err
    assert "Traceback" not in err
    assert f"{40 - len(written)} images missing" in err, err
    assert all(_idle(w) for w in pair), "a worker kept rendering for an interrupted job"


def test_a_frozen_worker_does_not_hold_the_exit(pair: list[LocalWorker], tmp_path: Path) -> None:
    frozen = LocalWorker("frozen", emulate_ipm=60, threads=1).start()
    try:
        assert frozen._process is not None
        process = subprocess.Popen(
            _command([pair[0], frozen], tmp_path, 8), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        threading.Timer(1.5, frozen._process.send_signal, args=(signal.SIGSTOP,)).start()
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert len(list(tmp_path.glob("*.png"))) == 8
        assert "wrote 8 images to" in err
    finally:
        if frozen._process is not None:
            frozen._process.send_signal(signal.SIGCONT)
        frozen.stop()


def test_abbreviated_flags_are_refused_and_help_shows_defaults(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "distributed", "generate"]
    abbreviated = subprocess.run(
        [*base, "--remote", "a=http://127.0.0.1:9", "--prompt", "x", "--image", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert abbreviated.returncode == 2 and "--image" in abbreviated.stderr
    shown = subprocess.run([*base, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert "(default: 512)" in shown.stdout and "(default: Euler a)" in shown.stdout


def test_a_second_run_plans_from_what_the_first_learned(tmp_path: Path) -> None:
    """Without --config: the first run learns who is fast; the second sends its one image to the fast worker (with
    nothing known, the planner's tie goes to the slow one)."""
    slow, fast = LocalWorker("slow", emulate_ipm=12, threads=1), LocalWorker("fast", emulate_ipm=120, threads=1)
    start_all([slow, fast])
    try:
        first = subprocess.run(_command([fast, slow], tmp_path / "a", 6, "--json"), capture_output=True, text=True,
                               timeout=120, check=False)  # fmt: skip
        assert first.returncode == 0, first.stderr
        second = subprocess.run(_command([fast, slow], tmp_path / "b", 1, "--json"), capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        assert second.returncode == 0, second.stderr
        summary = json.loads(second.stdout.strip().splitlines()[-1])
        assert summary["workers"]["fast"]["images"] == 1, summary
        cached = json.loads((Path(os.environ["DISTRIBUTED_CACHE_DIR"]) / "speeds.json").read_text(encoding="utf-8"))
        assert set(cached) == {slow.url, fast.url}
    finally:
        slow.stop()
        fast.stop()
