"""`generate --server URL`: the same job sent to a running `serve` (or any A1111) instead of driving workers."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import requests

from distributed.cli.generate import INTERRUPTED, build_spec, write_images
from distributed.engine.jobs import ImageResult, JobResult, WorkerStats
from distributed.errors import ConfigError

CONNECT_S = 10.0


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    spec = build_spec(args)
    return {
        **spec.payload,
        "batch_size": spec.images,
        "n_iter": 1,
        "seed": spec.seed,
        "subseed": spec.subseed,
        "subseed_strength": spec.subseed_strength,
    }


def result_from_answer(body: Any, url: str) -> JobResult:
    """The server's A1111 answer as a job result: images with their seeds, infotexts and workers."""
    if not isinstance(body, dict) or not isinstance(body.get("images"), list):
        raise ConfigError(f"{url} answered without an images list", field="--server")
    try:
        info = json.loads(body.get("info") or "{}")
    except ValueError:
        raise ConfigError(f"{url} answered info that is not JSON", field="--server") from None
    seeds, subseeds = info.get("all_seeds") or [], info.get("all_subseeds") or []
    texts = info.get("infotexts") or []
    extra = info.get("distributed") or {}
    makers = extra.get("image_workers") or []
    images = [
        ImageResult(
            index=index,
            seed=int(seeds[index]) if index < len(seeds) else 0,
            subseed=int(subseeds[index]) if index < len(subseeds) else 0,
            png=base64.b64decode(encoded),
            infotext=texts[index] if index < len(texts) else "",
            worker=str(makers[index]) if index < len(makers) else "server",
        )
        for index, encoded in enumerate(body["images"])
    ]
    workers = {
        name: WorkerStats(images=int(stats.get("images", 0)), failed_chunks=int(stats.get("failed_chunks", 0)))
        for name, stats in (extra.get("workers") or {}).items()
    }
    return JobResult(
        images,
        float(extra.get("wall_s") or 0.0),
        workers,
        list(extra.get("failures") or []),
        bool(extra.get("interrupted")),
    )


def run_submit(args: argparse.Namespace) -> int:
    from distributed.cli.generate import summary_json

    url = args.server.rstrip("/") + "/sdapi/v1/txt2img"
    try:
        body = request_body(args)
        session = requests.Session()
        try:
            response = session.post(url, json=body, timeout=(CONNECT_S, args.server_timeout))
        except KeyboardInterrupt:  # closing the connection cancels the job on the server and frees its workers
            session.close()
            print("interrupted: the server cancels the job", file=sys.stderr)
            return INTERRUPTED
        except requests.RequestException as exc:
            raise ConfigError(f"{url}: {exc}", field="--server") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            retry = response.headers.get("Retry-After")
            hint = f" (retry in {retry} s)" if retry else ""
            print(f"error: {url} answered HTTP {response.status_code}: {detail}{hint}", file=sys.stderr)
            return 1
        result = result_from_answer(response.json(), url)
        write_images(result, args.out)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(result.images)} images to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary_json(result)))
    if len(result.images) != body["batch_size"]:
        print(f"error: only {len(result.images)} of {body['batch_size']} images were made", file=sys.stderr)
        return INTERRUPTED if result.interrupted else 1
    return 0
