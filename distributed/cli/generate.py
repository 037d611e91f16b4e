"""`python -m distributed generate`: render N images across a fleet into a folder."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from distributed.cli.display import LiveBars, summary_table
from distributed.cli.speedcache import remember_speeds, with_cached_speeds
from distributed.compat import validate
from distributed.engine.config import FleetConfig, WorkerConfig, check_url, load_config, merge_workers, save_config
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobResult, JobSpec, fixed_seed
from distributed.engine.scheduler import contiguous_runs
from distributed.errors import ConfigError, DistributedError, JobError

logger = logging.getLogger(__name__)
INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", action="append", default=[], metavar="NAME=URL", help="a worker (repeatable)")
    parser.add_argument("--config", type=Path, default=None, help="workers.json with the fleet (and learned speeds)")
    parser.add_argument("--prompt", required=True, help="the prompt (A1111 syntax, sent as is)")
    parser.add_argument("--negative-prompt", default="", help="the negative prompt")
    parser.add_argument("--images", type=int, required=True, help="how many images (N)")
    parser.add_argument("--width", type=int, default=512, help="image width in pixels")
    parser.add_argument("--height", type=int, default=512, help="image height in pixels")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--cfg-scale", type=float, default=7.0, help="classifier-free guidance scale")
    parser.add_argument("--sampler", default="Euler a", help="A1111 sampler name")
    parser.add_argument("--scheduler", default=None, help="A1111 schedule type (Automatic, Karras, ...)")
    parser.add_argument("--seed", type=int, default=-1, help="first image's seed (-1: random)")
    parser.add_argument("--subseed", type=int, default=-1, help="variation seed (-1: random)")
    parser.add_argument("--subseed-strength", type=float, default=0.0, help="variation strength (0: none)")
    parser.add_argument("--model", default=None, help="checkpoint every worker must render with (title or name)")
    parser.add_argument("--extra-images", action="store_true", help="opt in: extra images for idle workers")
    parser.add_argument("--skip-verify", action="store_true", help="do not verify https workers' certificates")
    parser.add_argument("--save-config", action="store_true", help="write learned speeds back to --config")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object at the end")
    parser.add_argument(
        "--server", default=None, metavar="URL", help="send the job to a running `serve` (http://USER:PASS@HOST:PORT)"
    )
    parser.add_argument("--server-timeout", type=float, default=3600.0, help="longest wait for --server's answer (s)")


def parse_remote(value: str) -> WorkerConfig:
    name, sep, url = value.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"{value!r} is not NAME=URL", field="--remote")
    try:
        return validate(WorkerConfig, {"name": name, "url": check_url(url)})
    except ValueError as exc:
        raise ConfigError(f"{value!r}: {exc}", field="--remote") from exc


def build_fleet_config(config_path: Path | None, remotes: list[str]) -> FleetConfig:
    config = load_config(config_path) if config_path else FleetConfig()
    config = merge_workers(config, [parse_remote(r) for r in remotes])
    if not config.workers:
        raise ConfigError("no workers: give --remote NAME=URL or --config workers.json")
    return config


def build_spec(args: argparse.Namespace) -> JobSpec:
    if args.images < 1:
        raise ConfigError("must be at least 1", field="--images")
    for flag in ("width", "height", "steps"):
        if getattr(args, flag) < 1:
            raise ConfigError("must be positive", field=f"--{flag}")
    payload: dict[str, Any] = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "sampler_name": args.sampler,
    }
    if args.scheduler:
        payload["scheduler"] = args.scheduler
    if args.model:
        payload["override_settings"] = {"sd_model_checkpoint": args.model}
    return JobSpec(
        kind="txt2img",
        payload=payload,
        images=args.images,
        seed=fixed_seed(args.seed),
        subseed=fixed_seed(args.subseed),
        subseed_strength=args.subseed_strength,
        workload=Workload(args.width, args.height, args.steps),
    )


def write_images(result: JobResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(max((i.index for i in result.images), default=0))))
    paths = []
    for image in result.images:
        path = out / f"{image.index:0{width}d}-{image.seed}-{image.worker}.png"
        path.write_bytes(image.png)
        paths.append(path)
    return paths


def summary_json(result: JobResult) -> dict[str, Any]:
    return {
        "images": len(result.requested),
        "wall_s": round(result.wall_s, 3),
        "seeds": [image.seed for image in result.requested],
        "workers": {
            name: {"images": stats.images, "failed_chunks": stats.failed_chunks}
            for name, stats in result.workers.items()
        },
    }


def run_job(config: FleetConfig, spec: JobSpec, verify_tls: bool, show: bool) -> tuple[JobResult, Fleet]:
    """The job in a thread of its own, so Ctrl-C in the main thread interrupts it cleanly: the workers are told to
    stop, and what arrived comes back as an interrupted result within about a second."""
    fleet = Fleet(config, verify_tls_default=verify_tls)
    bars = LiveBars([m.name for m in fleet], spec.images) if show else None
    job = Job(fleet, spec, on_event=bars)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = job.run()
        except DistributedError as error:  # handed to the main thread, which raises it
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=work, name="distributed-generate", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        job.interrupt()
        if not done.wait(timeout=job.policy.interrupt_grace_s + 0.5):
            raise JobError("interrupted; the job did not stop in time") from None
    finally:
        if bars is not None:
            bars.close()
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:  # a bug in the job thread: its traceback is on stderr
        raise JobError("the job stopped unexpectedly")
    result: JobResult = outcome["result"]
    return result, fleet


def run_generate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.server:
        if args.remote or args.config:
            print("error: --server sends the job to a running serve; give it no --remote or --config", file=sys.stderr)
            return 2
        from distributed.cli.submit import run_submit

        return run_submit(args)
    try:
        config = with_cached_speeds(build_fleet_config(args.config, args.remote))
        spec = build_spec(args)
        if args.extra_images or config.options.extra_images:
            spec.extra_slack = config.options.extra_slack
        result, fleet = run_job(config, spec, verify_tls=not args.skip_verify, show=True)
    except JobError as exc:
        partial = exc.partial
        if partial is not None and partial.images:
            write_images(partial, args.out)
            print(f"wrote the {len(partial.images)} images that arrived to {args.out}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        write_images(result, args.out)
        remember_speeds(fleet)
        if args.save_config and args.config:
            save_config(fleet.learned_config(), args.config)
    except (OSError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        fleet.close()
    complete = len(result.requested) == spec.images
    print(summary_table(result), file=sys.stderr if args.json else sys.stdout)
    print(f"wrote {len(result.images)} images to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary_json(result)))
    if result.interrupted:
        missing = sorted(set(range(spec.images)) - {image.index for image in result.requested})
        print(f"interrupted: {len(missing)} images missing (indices {_ranges(missing)})", file=sys.stderr)
        return INTERRUPTED
    if not complete:
        print(f"error: only {len(result.requested)} of {spec.images} images were made", file=sys.stderr)
    return 0 if complete else 1


def _ranges(indices: list[int]) -> str:
    runs = contiguous_runs(indices)
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
