"""`python -m distributed train-demo`: a coordinator and trainer peers on 127.0.0.1 fine-tune the tiny model on a
synthetic dataset; one peer is killed mid-run (SIGKILL, holding a chunk) and a new one joins; the result is exported and
rendered through a headless worker; a loss curve and a peers-over-time chart are written."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import requests

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.training.dataset import make_synthetic

DEADLINE_S = 240.0  # the whole run's training, after which the demo gives up with what it has


def add_train_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peers", type=int, default=3, help="trainer peers at the start")
    parser.add_argument("--epochs", type=int, default=12, help="global epochs to train")
    # the tiny model's random UNet learns little through a LoRA in a dozen global steps; the whole UNet does
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0: the whole UNet)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--compression", default="fp16", choices=["fp16", "8bit", "none"])
    parser.add_argument("--out", type=Path, default=Path("out/train-demo"), help="where everything goes")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")


class Child:
    """A `python -m distributed ...` child in its own process group; its output goes to a log file and is watched
    for lines (`expect` registers a pattern and returns an event set when a line matches it)."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._watch: list[tuple[re.Pattern[str], threading.Event]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distributed", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def expect(self, pattern: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._watch.append((re.compile(pattern), event))
        return event

    def _read(self, stream: IO[str]) -> None:
        with self.log.open("a", encoding="utf-8") as handle:
            for line in stream:
                handle.write(line)
                handle.flush()
                with self._lock:
                    for pattern, event in self._watch:
                        if pattern.search(line):
                            event.set()

    def kill(self) -> None:
        """SIGKILL the whole group: the peer, its DHT and averager processes, its p2pd."""
        with contextlib.suppress(ProcessLookupError):  # the group outlives its leader: kill it even after exit
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _chart(path: Path, title: str, series: dict[str, tuple[list[float], list[float]]], ylabel: str, step: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    for label, (xs, ys) in series.items():
        if step:
            axes.step(xs, ys, label=label, where="post")
        else:
            axes.plot(xs, ys, label=label)
    axes.set_title(title)
    axes.set_xlabel("seconds")
    axes.set_ylabel(ylabel)
    if len(series) > 1:
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _render(model: str, out: Path) -> tuple[str, bytes]:
    worker = LocalWorker("render", model=model, extra_args=[]).start(120)
    try:
        body = {"prompt": "a red circle", "seed": 5, "width": 64, "height": 64, "steps": 8, "sampler_name": "Euler a"}
        answer = requests.post(f"{worker.url}/sdapi/v1/txt2img", json=body, timeout=120)
        answer.raise_for_status()
        png = base64.b64decode(answer.json()["images"][0])
    finally:
        worker.stop()
    out.write_bytes(png)
    return str(out), png


def _max_weight_difference(first: str, second: str) -> float:
    from safetensors.torch import load_file

    name = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(Path(first) / name)), load_file(str(Path(second) / name))
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_train_demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.log"):
        stale.unlink()
    names = make_synthetic(out / "data", 48)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = out / "leases.db"
    db.unlink(missing_ok=True)
    coordinator_args = ["coordinator", "--dataset", str(out / "data"), "--port", str(port), "--lease-s", "6"]
    coordinator = Child(
        "coordinator", [*coordinator_args, "--chunk-size", "4", "--db", str(db)], out / "coordinator.log"
    )
    ready = coordinator.expect("Uvicorn running on")
    if not ready.wait(60):
        coordinator.kill()
        raise SystemExit(f"the coordinator did not start: see {out / 'coordinator.log'}")
    say(f"coordinator on {url}: {len(names)} samples; starting {args.peers} peers")

    def peer(number: int) -> Child:
        train = ["train", "--coordinator", url, "--out", str(out / f"peer{number}"), "--epochs", str(args.epochs)]
        train += ["--lora-rank", str(args.lora_rank), "--compression", args.compression, "--name", f"peer{number}"]
        train += ["--lr", str(args.lr)]
        return Child(f"peer{number}", train, out / f"peer{number}.log")

    peers = [peer(n) for n in range(args.peers)]
    victim = peers[0]
    holding = victim.expect(r"epoch ([2-9]|\d\d+): training chunk")
    try:
        if not holding.wait(DEADLINE_S / 2):
            raise SystemExit(f"peer0 never reached epoch 2 holding a chunk: see {out}/peer0.log")
        victim.kill()
        say("peer0 killed (SIGKILL) while holding a chunk; peer3 joins")
        peers.append(peer(args.peers))
        for child in peers[1:]:
            if child.wait(DEADLINE_S) is None:
                child.kill()
                say(f"{child.name} did not finish within {DEADLINE_S:.0f} s")
        status = requests.get(f"{url}/status", timeout=10).json()
        losses = requests.get(f"{url}/v1/losses", timeout=10).json()
    finally:
        for child in peers:
            if child.process.poll() is None:
                child.kill()
        coordinator.kill()
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("peer*/summary.json")) if "peer0" not in str(p)]
    if not summaries:
        raise SystemExit(f"no peer finished: see the logs in {out}")
    survivor = summaries[0]
    start = min((entry["at"] for entry in losses), default=0.0)
    by_peer: dict[str, tuple[list[float], list[float]]] = {}
    for entry in losses:
        xs, ys = by_peer.setdefault(entry["peer"], ([], []))
        xs.append(entry["at"] - start)
        ys.append(entry["loss"])
    _chart(out / "loss.png", "training loss per reported chunk", by_peer, "loss", step=False)
    times = status["peers_over_time"]
    _chart(
        out / "peers.png",
        "peers holding or reporting chunks",
        {"peers": ([t for t, _ in times], [n for _, n in times])},
        "peers",
        step=True,
    )
    image, trained = _render(survivor["checkpoint"], out / "image.png")
    _, again = _render(survivor["checkpoint"], out / "image-again.png")
    _, base = _render("tiny", out / "base.png")
    joiner = [s for s in summaries if s["peer"] == f"peer{args.peers}"]
    chunks = status["chunks"]
    lost = status["epoch"] * chunks + status["done"] - status["reports"]
    result = {
        "peers": args.peers + 1,
        "epochs": survivor["epochs"],
        "loss_first": round(survivor["eval_first"], 4),
        "loss_last": round(survivor["eval_last"], 4),
        "chunks_done": status["reports"],
        "chunks_reassigned": status["reassigned"],
        "chunks_lost": lost,
        "compression": survivor["compression"],
        "bytes_per_round": round(survivor["bytes_per_round"]),
        "bytes_per_round_fp32": round(survivor["bytes_per_round_fp32"]),
        "checkpoint": survivor["checkpoint"],
        "image": image,
        "differs_from_base": trained != base,
        "renders_deterministically": trained == again,
        # the late joiner's weights against a peer that trained from the start (fp16 averaging: tiny, not zero)
        "late_joiner_max_diff": _max_weight_difference(joiner[0]["checkpoint"], survivor["checkpoint"])
        if joiner
        else None,
    }
    say(
        f"loss {result['loss_first']} -> {result['loss_last']}; {result['chunks_reassigned']} chunks reassigned, "
        f"{lost} lost; charts {out / 'loss.png'}, {out / 'peers.png'}; image {image}"
    )
    if args.json:
        print(json.dumps(result))
    return 0
