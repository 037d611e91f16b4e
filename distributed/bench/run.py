"""`python -m distributed bench`: runs every measurement, writes docs/benchmarks/, prints the ratios last."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

SIZES = (1, 4, 24, 96)
FLEETS = ("equal", "unequal", "extreme")  # the shapes in bench/fleets.py


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where the report goes")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batch sizes (default 1,4,24,96)")
    parser.add_argument("--fleets", default=",".join(FLEETS), help="equal,unequal,extreme (default all)")
    parser.add_argument("--quick", action="store_true", help="batches only, small sizes (a smoke test)")
    parser.add_argument(
        "--real-compute",
        action="store_true",
        help="with --quick: still measure the cost model's prediction error on real compute (a tiny-model worker "
        "without emulation, about a minute; always measured without --quick)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="with --quick: still measure many clients through the `serve` gateway on the unequal fleet (about a "
        "minute; always measured without --quick)",
    )


def run_bench(args: argparse.Namespace) -> int:
    from distributed.bench.fleets import SHAPES, LocalFleet
    from distributed.bench.measures import (
        batch_rows,
        interrupt_latency,
        killed_worker,
        master_cost_per_image,
        prediction_errors,
    )
    from distributed.bench.realcompute import REAL, real_compute_errors
    from distributed.bench.report import Report, batches_chart
    from distributed.bench.serving import serving_rows

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    wanted = set(args.fleets.split(","))
    unknown = wanted - {s.name for s in SHAPES}
    if unknown:
        raise SystemExit(f"--fleets: unknown fleet(s) {', '.join(sorted(unknown))}")
    report = Report()
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="distributed-bench-"))
    for shape in (s for s in SHAPES if s.name in wanted):
        print(f"fleet {shape.name} ({shape.label}): starting workers", flush=True)
        with LocalFleet(shape, logs) as local:
            local.calibrate(budget_s=10.0)
            report.rates[shape.name] = {n: 60 * local.rate(n) for n in local.workers}
            if shape.name == "unequal":
                report.benchmark_s = dict(local.benchmark_seconds)
            print(f"  benchmarked: {report.rates[shape.name]}", flush=True)
            report.batches += batch_rows(local, sizes)
            if shape.name == "unequal" and (args.serve or not args.quick):
                print("  many clients through serve", flush=True)
                report.serving = serving_rows(local)
            if args.quick or shape.name != "unequal":
                continue
            print("  prediction errors, interrupt latency, a killed worker", flush=True)
            report.predictions = prediction_errors(local)
            report.interrupt = interrupt_latency(local)
            report.kill = killed_worker(local, 48)
    if not args.quick or args.real_compute:
        print(f"prediction errors on {REAL}", flush=True)
        report.real = real_compute_errors(logs)
    if not args.quick:
        print("master cost per 512x512 image", flush=True)
        report.master_ms, report.master_png_bytes = master_cost_per_image()
        report.master_ms *= 1000
    report.seconds = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    if report.batches:
        batches_chart(report.batches, args.out / "batches.png")
    (args.out / "README.md").write_text(report.markdown(), encoding="utf-8")
    print(f"report written to {args.out}/README.md")
    print("\n".join(report.ratio_lines()))
    return 0
