"""Every reason names the worker, the call's URL and what happened: refused, TLS, not an A1111 API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distributed.cli.display import summary_table
from distributed.cli.localfleet import free_port
from distributed.compat import validate
from distributed.engine.client import WorkerClient
from distributed.engine.config import FleetConfig, Timeouts, WorkerConfig
from distributed.engine.jobs import JobResult, WorkerStats
from distributed.errors import WorkerHTTPError, WorkerTLSError, WorkerUnreachable


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("content-length", "9")
        self.end_headers()
        self.wfile.write(b"not found")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def plain_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str) -> WorkerClient:
    config = validate(WorkerConfig, {"name": "box", "url": url})
    return WorkerClient(config, Timeouts(connect_s=1, probe_s=1))


def test_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WorkerUnreachable, match="connection refused") as caught:
        _client(url).progress()
    assert f"GET {url}/sdapi/v1/progress" in str(caught.value) and "'box'" in str(caught.value)


def test_https_to_an_http_worker_is_a_tls_failure(plain_server: str) -> None:
    with pytest.raises(WorkerTLSError, match="TLS handshake failed") as caught:
        _client(f"https://{plain_server}").progress()
    assert caught.value.reason == "TLS failed" and f"https://{plain_server}" in str(caught.value)


def test_a_plain_http_server_is_not_an_a1111_api(plain_server: str) -> None:
    with pytest.raises(WorkerHTTPError, match="HTTP 404") as caught:
        _client(f"http://{plain_server}").sd_models()
    assert "--api" in str(caught.value) and f"GET http://{plain_server}/sdapi/v1/sd-models" in str(caught.value)


def test_the_summary_says_why_a_worker_made_no_images() -> None:
    result = JobResult(
        [],
        1.0,
        {"a": WorkerStats(images=0), "b": WorkerStats(images=0), "c": WorkerStats(images=0)},
        ["worker 'a': GET http://h:1/sdapi/v1/progress: connection refused"],
        excluded={"b": "worker 'b': has no checkpoint matching x"},
    )
    text = summary_table(result)
    assert "a made no images: worker 'a': GET http://h:1" in text
    assert "b made no images: worker 'b': has no checkpoint" in text
    assert "c made no images: the plan gave it no images" in text


def test_debug_logging_names_every_request_and_plan(caplog: pytest.LogCaptureFixture) -> None:
    """--distributed-debug's promise: requests (method, URL, status, time) and plans in the log."""
    import logging

    from distributed.engine.costmodel import Workload
    from distributed.engine.dispatcher import Job
    from distributed.engine.fleet import Fleet
    from distributed.engine.jobs import JobSpec
    from tests.threadworker import ThreadWorker

    caplog.set_level(logging.DEBUG, logger="distributed")
    with ThreadWorker("logged") as worker:
        config = validate(FleetConfig, {"workers": [{"name": "logged", "url": worker.url}]})
        spec = JobSpec("txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2}, 2, 5, 5,
                       workload=Workload(64, 64, 2))  # fmt: skip
        Job(Fleet(config), spec).run()
    text = caplog.text
    assert f"POST {worker.url}/sdapi/v1/txt2img -> 200 in " in text
    assert f"GET {worker.url}/sdapi/v1/progress?skip_current_image=true -> 200" in text
    assert "plan for 2 pending images: {'logged': " in text
