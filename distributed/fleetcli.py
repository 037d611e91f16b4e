"""`python -m distributed import-config` and `benchmark`: managing workers.json from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distributed.benchmark import benchmark_all
from distributed.compat import copy_with
from distributed.config import save_config
from distributed.costmodel import Workload
from distributed.errors import ConfigError, DistributedError
from distributed.fleet import Fleet
from distributed.generate import build_fleet_config
from distributed.priorart import import_prior_art


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
    outcomes = benchmark_all(members, Workload(args.width, args.height, args.steps), args.budget, args.model)
    fleet.close()
    workers = []
    failed = 0
    for member in fleet:
        outcome = next((o for o in outcomes if o.worker == member.name), None)
        if outcome is None or outcome.cost is None:
            failed += outcome is not None
            print(f"{member.name:>16}: {outcome.error if outcome else 'disabled, not measured'}")
            workers.append(member.config)
            continue
        print(
            f"{member.name:>16}: {outcome.record.ipm if outcome.record else 0:8.2f} images/min at 512x512, 20 steps; "
            f"overhead {outcome.cost.overhead_s:.3f} s; measured in {outcome.record.seconds if outcome.record else 0} s"
        )
        workers.append(copy_with(member.config, cost_model=outcome.cost.to_state(), benchmark=outcome.record))
    if args.config:
        try:
            save_config(copy_with(config, workers=workers), args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 1 if failed else 0
