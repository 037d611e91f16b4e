"""Browser tier: the Distributed tab on a real gradio server, driven by Debian's chromium through Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
