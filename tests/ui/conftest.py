"""Browser tier: the Distributed tab on a real gradio server, driven by Debian's chromium through Playwright."""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")

from distributed.cli.localfleet import LocalWorker, free_port  # noqa: E402
from distributed.master.manager import FleetManager  # noqa: E402
from distributed.webui.tab import build_tab  # noqa: E402


@pytest.fixture(scope="session")
def ui_worker() -> Iterator[LocalWorker]:
    worker = LocalWorker("desk")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture()
def tab_server(tmp_path: Path) -> Iterator[tuple[str, FleetManager]]:
    manager = FleetManager(tmp_path / "workers.json", [])
    blocks = build_tab(manager)
    blocks.queue()
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    # the server thread is a daemon and ends with the session: gradio 3.41's close() waits minutes for idle
    # keep-alive connections, so each test gets a new server on a new port instead
    yield f"http://127.0.0.1:{port}", manager
    manager.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (tools/dev.sh test installs it)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(tab_server: tuple[str, FleetManager], browser: Any) -> Iterator[Any]:
    """A page in its own browser context, closed before the tab's server stops (open sockets stall its shutdown)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass(frozen=True)
class Mark:
    """How much a Received held at one moment."""

    bodies: int
    frames: int
    streamed: dict[str, int]  # request id -> bytes


@dataclass
class Received:
    """Everything the server sends the page: each HTTP response body, each websocket frame (gradio 3.41's queue)
    and each streamed body (gradio 4.40's queue answers on a text/event-stream that its client aborts once read,
    so Playwright has no body for it: Chromium's DevTools protocol streams those bytes as they arrive)."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)  # (url, body) in arrival order
    frames: list[str] = field(default_factory=list)
    streams: dict[str, tuple[str, list[bytes]]] = field(default_factory=dict)  # request id -> (url, chunks)
    responses: list[Any] = field(default_factory=list)
    finished: list[Any] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("response", self._response)
        page.on("requestfinished", self._finished)
        page.on("websocket", lambda socket: socket.on("framereceived", self._frame))
        devtools = page.context.new_cdp_session(page)

        def stream(event: dict[str, Any]) -> None:
            if event["response"].get("mimeType") != "text/event-stream":
                return
            try:
                sent = devtools.send("Network.streamResourceContent", {"requestId": event["requestId"]})
            except playwright_api.Error as error:  # it ended before this asked: "requestfinished" has its body
                if "already finished loading" not in error.message:
                    raise
                return
            chunks = [base64.b64decode(sent["bufferedData"])]
            self.streams[event["requestId"]] = (event["response"]["url"], chunks)

        def data(event: dict[str, Any]) -> None:
            if event["requestId"] in self.streams and event.get("data"):
                self.streams[event["requestId"]][1].append(base64.b64decode(event["data"]))

        devtools.on("Network.responseReceived", stream)
        devtools.on("Network.dataReceived", data)
        devtools.send("Network.enable")

    def _response(self, response: Any) -> None:
        self.responses.append(response)

    def _finished(self, request: Any) -> None:
        response = request.response()
        if response is not None:
            self.finished.append(request)
            self.bodies.append((request.url, response.body()))

    def _frame(self, payload: str | bytes) -> None:
        self.frames.append(payload if isinstance(payload, str) else payload.decode("utf-8", "replace"))

    def texts(self, since: Mark | None = None) -> list[str]:
        """Every body, frame and stream as text, one entry each (a stream's chunks joined: no secret splits);
        with `since`, only what arrived after that mark."""
        mark = since or Mark(0, 0, {})
        bodies = [body.decode("utf-8", "replace") for _, body in self.bodies[mark.bodies :]]
        streamed = [
            b"".join(chunks)[mark.streamed.get(request, 0) :].decode("utf-8", "replace")
            for request, (_, chunks) in self.streams.items()
        ]
        return [*bodies, *self.frames[mark.frames :], *streamed]

    def mark(self) -> Mark:
        streamed = {request: sum(map(len, chunks)) for request, (_, chunks) in self.streams.items()}
        return Mark(len(self.bodies), len(self.frames), streamed)

    def unaccounted(self) -> list[str]:
        """Responses whose body was neither read when they finished nor streamed: what this recorder missed."""
        streamed = Counter(url for url, _ in self.streams.values())
        missed = []
        for response in self.responses:
            if any(response.request is request for request in self.finished):
                continue
            if streamed[response.url] > 0:
                streamed[response.url] -= 1
                continue
            missed.append(f"{response.status} {response.url}")
        return missed


@pytest.fixture()
def received(page: Any) -> Received:
    """What the page receives from here on (attach before the first navigation)."""
    recorder = Received()
    recorder.attach(page)
    return recorder
