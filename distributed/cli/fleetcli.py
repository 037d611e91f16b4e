"""`python -m distributed import-config` and `benchmark`: managing workers.json from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distributed.cli.generate import build_fleet_config
from distributed.compat import copy_with
from distributed.engine.benchmark import benchmark_each
from distributed.engine.config import save_config
from distributed.engine.costmodel import Workload
from distributed.engine.fleet import Fleet
from distributed.engine.priorart import import_prior_art
from distributed.errors import ConfigError, DistributedError


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="the old distributed-config.json or workers.json")
    parser.add_argument("--config", type=Path, required=True, help="the new workers.json to write")
    parser.add_argument("--force", action="store_true", help="replace --config if it exists (a .bak is kept)")


def run_import(args: argparse.Namespace) -> int:
    try:
        try:
            data = json.loads(args.source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot be read as JSON: {exc}", path=str(args.source)) from exc
        config, notes = import_prior_art(data, str(args.source))
        if args.config.exists() and not args.force:
            raise ConfigError("exists; add --force to replace it (a .bak is kept)", path=str(args.config))
        save_config(config, args.config)
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {len(config.workers)} workers from {args.source} into {args.config}")
    for note in notes:
        print(f"  - {note}")
    return 0


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="workers.json: results are saved into it")
    parser.add_argument("--remote", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=10.0, help="about how many seconds per worker")
    parser.add_argument("--model", default=None, help="checkpoint to benchmark with")
    parser.add_argument("--skip-verify", action="store_true")


def run_benchmark(args: argparse.Namespace) -> int:
    try:
        config = build_fleet_config(args.config, args.remote)
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fleet = Fleet(config, verify_tls_default=not args.skip_verify)
    members = [m for m in fleet if m.config.enabled]
    workload = Workload(args.width, args.height, args.steps)
    print(f"benchmarking {len(members)} workers at {workload.label}, about {args.budget:g} s each...", flush=True)
    outcomes = {}
    try:
        for outcome in benchmark_each(members, workload, args.budget, args.model):  # each as it finishes
            outcomes[outcome.worker] = outcome
            if outcome.cost is None:
                print(f"{outcome.worker:>16}: failed: {outcome.error}", flush=True)
            else:
                reference = outcome.record.ipm if outcome.record else 0
                speed = f"{outcome.cost.describe()} (overhead {outcome.cost.overhead_s:.3f} s"
                print(f"{outcome.worker:>16}: {speed}, {reference:.2f} images/min at 512x512, 20 steps)", flush=True)
    finally:
        fleet.close()
    workers = [
        copy_with(m.config, cost_model=o.cost.to_state(), benchmark=o.record)
        if (o := outcomes.get(m.name)) is not None and o.cost is not None
        else m.config
        for m in fleet
    ]
    failed = sum(1 for o in outcomes.values() if o.cost is None)
    if args.config:
        try:
            save_config(copy_with(config, workers=workers), args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"saved {len(outcomes) - failed} measured speeds to {args.config}")
    elif outcomes:
        print("not saved: give --config workers.json to keep these speeds")
    return 1 if failed else 0
