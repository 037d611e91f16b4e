"""The worker client against misbehaving HTTP peers: every failure maps onto the documented error tree."""

from __future__ import annotations

import base64
import logging
import struct
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

from distributed.compat import validate
from distributed.engine.client import WorkerClient
from distributed.engine.config import FleetConfig, Timeouts, WorkerConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet
from distributed.engine.jobs import JobSpec
from distributed.errors import (
    JobError,
    WorkerAuthError,
    WorkerHTTPError,
    WorkerInvalidResponse,
    WorkerModelMissing,
    WorkerTimeout,
    WorkerTLSError,
    WorkerUnreachable,
)
from tests.faults import IDLE_PROGRESS, fake_worker
from tests.helpers import self_signed
from tests.threadworker import ThreadWorker

TIMEOUTS = validate(Timeouts, {"connect_s": 1.0, "probe_s": 1.0})


def _client(url: str) -> WorkerClient:
    return WorkerClient(validate(WorkerConfig, {"name": "peer", "url": url}), TIMEOUTS)


def _answer(status: int, payload: Any) -> Any:
    return lambda method, path, body: (status, payload)


def _png_header(width: int, height: int) -> str:
    """The first bytes of a PNG whose header claims this size (a decompression bomb needs no more to start)."""
    ihdr = struct.pack(">II", width, height) + bytes([8, 2, 0, 0, 0])
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


PNG = _png_header(64, 64)


@pytest.mark.parametrize(
    ("status", "payload", "error"),
    [
        (401, {"detail": "Incorrect username or password"}, WorkerAuthError),
        (403, {"detail": "forbidden"}, WorkerAuthError),
        (500, {"detail": "CUDA out of memory"}, WorkerHTTPError),
        (200, b"<html>not json</html>", WorkerInvalidResponse),
        (200, {"no": "images"}, WorkerInvalidResponse),
        (200, {"images": ["%%%"], "info": "{}"}, WorkerInvalidResponse),
        (200, {"images": [base64.b64encode(b"GIF89a").decode()], "info": "{}"}, WorkerInvalidResponse),
        (200, {"images": [PNG], "info": "not json"}, WorkerInvalidResponse),
        (200, {"images": [_png_header(100_000, 100_000)], "info": "{}"}, WorkerInvalidResponse),
    ],
)
def test_bad_answers_map_to_the_error_tree(status: int, payload: Any, error: type[Exception]) -> None:
    with fake_worker(_answer(status, payload)) as url, pytest.raises(error) as raised:
        _client(url).generate("txt2img", {"prompt": "x"}, read_s=5)
    assert "'peer'" in str(raised.value)


def test_404_for_a_requested_model_is_model_missing() -> None:
    with fake_worker(_answer(404, {"detail": "model 'sdxl' not found"})) as url:
        with pytest.raises(WorkerModelMissing, match="sdxl"):
            _client(url).generate("txt2img", {"override_settings": {"sd_model_checkpoint": "sdxl"}}, read_s=5)
        with pytest.raises(WorkerHTTPError):
            _client(url).generate("txt2img", {"prompt": "x"}, read_s=5)


def test_unreachable_and_silent_workers() -> None:
    with pytest.raises(WorkerUnreachable):
        _client("http://127.0.0.1:9").progress()
    with fake_worker(lambda method, path, body: None) as url:
        started = time.monotonic()
        with pytest.raises(WorkerTimeout):
            _client(url).progress()
        assert time.monotonic() - started < 5


def test_response_size_is_capped() -> None:
    with fake_worker(_answer(200, {"images": [PNG] * 50, "info": "{}"})) as url:
        client = _client(url)
        client.max_response_bytes = 1000
        with pytest.raises(WorkerInvalidResponse, match="cap"):
            client.generate("txt2img", {}, read_s=5)


def _wrong_count(method: str, path: str, body: bytes) -> tuple[int, Any]:
    if path.startswith("/sdapi/v1/progress"):
        return 200, IDLE_PROGRESS
    if path.startswith("/sdapi/v1/txt2img"):
        return 200, {"images": [], "info": "{}"}
    return 200, {}


def _spec(images: int) -> JobSpec:
    return JobSpec(
        "txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 4}, images, 10, 10, workload=Workload(64, 64, 4)
    )


def test_a_garbling_worker_loses_nothing(slow: ThreadWorker) -> None:
    with fake_worker(_wrong_count) as garbage:
        data = {"workers": [{"name": "good", "url": slow.url}, {"name": "garbage", "url": garbage}]}
        result = Job(Fleet(validate(FleetConfig, data)), _spec(3)).run()
    assert [image.seed for image in result.requested] == [10, 11, 12]
    assert any("garbage" in failure and "0 images" in failure for failure in result.failures)


def test_a_request_every_worker_fails_ends_the_job() -> None:
    with fake_worker(_wrong_count) as first, fake_worker(_wrong_count) as second:
        data = {"workers": [{"name": "one", "url": first}, {"name": "two", "url": second}]}
        with pytest.raises(JobError, match="failed on 2 workers"):
            Job(Fleet(validate(FleetConfig, data)), _spec(2)).run()


def test_an_image_claiming_huge_dimensions_is_refused_before_decoding() -> None:
    bomb = {"images": [_png_header(100_000, 100_000)], "info": "{}"}
    with fake_worker(_answer(200, bomb)) as url, pytest.raises(WorkerInvalidResponse, match="100000x100000"):
        _client(url).generate("txt2img", {}, read_s=5)


@contextmanager
def https_worker(folder: Path) -> Iterator[str]:
    """An idle worker's /progress over https with a self-signed certificate, served in a thread (keep-alive: the
    second request reuses the pool's connection)."""
    with fake_worker(lambda method, path, body: (200, IDLE_PROGRESS), tls=self_signed(folder), keep_alive=True) as url:
        yield url


def test_skipping_tls_verification_is_said_once_per_worker_and_changes_no_warning_filter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The user's choice is logged when the client is built; urllib3's per-request warning is not emitted, and
    nothing process-wide changes (a global filter would also hide other code's warnings)."""
    caplog.set_level(logging.WARNING, logger="distributed")
    with https_worker(tmp_path) as url:
        filters = list(warnings.filters)
        skipping = WorkerClient(validate(WorkerConfig, {"name": "lab", "url": url, "verify_tls": False}), TIMEOUTS)
        by_default = WorkerClient(validate(WorkerConfig, {"name": "lab2", "url": url}), TIMEOUTS, False)
        assert warnings.filters == filters
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every warning reaches `caught`, however often it repeats
            assert skipping.progress()["progress"] == 0
            assert skipping.progress()["progress"] == 0
            assert by_default.progress()["progress"] == 0
        insecure = [w for w in caught if issubclass(w.category, InsecureRequestWarning)]
        assert insecure == [], [str(w.message) for w in insecure]
        said = [r.getMessage() for r in caplog.records if "verification is off" in r.getMessage()]
        assert said == [
            "worker lab: TLS certificate verification is off",
            "worker lab2: TLS certificate verification is off",
        ]
        # verification stays on unless asked off: the same self-signed worker is refused
        with pytest.raises(WorkerTLSError, match="TLS handshake failed"):
            WorkerClient(validate(WorkerConfig, {"name": "strict", "url": url}), TIMEOUTS).progress()
        assert warnings.filters == filters
