"""`python -m distributed ...`: the command line."""

from __future__ import annotations

import argparse
import functools
import sys

from distributed import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distributed", description="distributed Stable Diffusion tools", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"distributed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    # every command: defaults in --help, and no abbreviated long flags (`--image 2` is not `--images 2`)
    subcommand = functools.partial(
        commands.add_parser, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    from distributed.worker.server import add_worker_arguments

    worker = subcommand("worker", help="run a headless worker speaking the webui's /sdapi/v1 API")
    add_worker_arguments(worker)
    generate = subcommand("generate", help="render N images across a fleet of workers into a folder")
    from distributed.cli.generate import add_generate_arguments

    add_generate_arguments(generate)
    demo = subcommand("demo", help="three local workers at speeds 5:2:1 render 24 images as one fleet")
    from distributed.cli.demo import add_demo_arguments

    add_demo_arguments(demo)
    from distributed.cli.fleetcli import add_benchmark_arguments, add_import_arguments

    add_benchmark_arguments(subcommand("benchmark", help="measure each worker's speed (saved to --config)"))
    add_import_arguments(subcommand("import-config", help="convert a stable-diffusion-webui-distributed config"))
    from distributed.bench.run import add_bench_arguments

    add_bench_arguments(subcommand("bench", help="measure the fleet against the ideal and simple splits"))
    from distributed.bench.cfg import add_bench_cfg_arguments

    add_bench_cfg_arguments(subcommand("bench-cfg", help="one image per step on one lane, two lanes and a peer pair"))
    from distributed.training.coordinator import add_coordinator_arguments
    from distributed.training.trainer import add_train_arguments

    add_coordinator_arguments(subcommand("coordinator", help="lease a dataset's chunks to trainer peers (training)"))
    add_train_arguments(subcommand("train", help="a trainer peer: fine-tune with the others through hivemind"))
    from distributed.training.demo import add_train_demo_arguments

    add_train_demo_arguments(
        subcommand("train-demo", help="a coordinator and peers on this machine train the tiny model")
    )
    from distributed.cli.serve import add_serve_arguments

    add_serve_arguments(subcommand("serve", help="one A1111 API address for the whole fleet, shared by many clients"))
    render = subcommand("render", help="start a local tiny worker and render a few images into a folder")
    from distributed.cli.quickstart import add_render_arguments

    add_render_arguments(render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from distributed.worker.server import run_worker

        return run_worker(args)
    if args.command == "generate":
        from distributed.cli.generate import run_generate

        return run_generate(args)
    if args.command == "demo":
        from distributed.cli.demo import run_demo

        return run_demo(args)
    if args.command in ("benchmark", "import-config"):
        from distributed.cli.fleetcli import run_benchmark, run_import

        return run_benchmark(args) if args.command == "benchmark" else run_import(args)
    if args.command == "bench":
        from distributed.bench.run import run_bench

        return run_bench(args)
    if args.command == "coordinator":
        from distributed.training.coordinator import run_coordinator

        return run_coordinator(args)
    if args.command == "train":
        from distributed.training.trainer import run_train

        return run_train(args)
    if args.command == "train-demo":
        from distributed.training.demo import run_train_demo

        return run_train_demo(args)
    if args.command == "bench-cfg":
        from distributed.bench.cfg import run_bench_cfg

        return run_bench_cfg(args)
    if args.command == "serve":
        from distributed.cli.serve import run_serve

        return run_serve(args)
    if args.command == "render":
        from distributed.cli.quickstart import run_render

        return run_render(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
