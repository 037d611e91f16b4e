"""Add, test, disable and remove a worker in the tab, in a real browser; the file and the table follow."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from distributed.cli.localfleet import LocalWorker, free_port
from distributed.master.manager import FleetManager
from tests.ui.conftest import Received

WAIT_MS = 20_000
# gradio's own server leaves client sockets to the garbage collector; that is gradio's, not ours
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")


def field(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def click(page: Any, elem_id: str) -> None:
    page.locator(f"#{elem_id}").first.click()


def choose(page: Any, elem_id: str, text: str) -> None:
    """Pick a dropdown entry the way a user does, in gradio 3.41 and 4.40 alike: type, then pick from the list."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(text)
    page.locator(f"#{elem_id} ul.options li", has_text=text).first.click()


def wait_for_value(page: Any, elem_id: str, value: str) -> None:
    script = f"""() => {{
        const box = document.querySelector('#{elem_id} textarea, #{elem_id} input');
        return box && box.value === {json.dumps(value)};
    }}"""
    page.wait_for_function(script, timeout=WAIT_MS)


def add_worker(page: Any, name: str, url: str) -> None:
    field(page, "distributed_name").fill(name)
    field(page, "distributed_url").fill(url)
    click(page, "distributed_save")
    page.wait_for_selector(f'#distributed_status tr[data-worker="{name}"]', timeout=WAIT_MS)


def state_of(page: Any, name: str) -> str:
    return str(
        page.locator(f'#distributed_status tr[data-worker="{name}"] .distributed-state').get_attribute("data-state")
    )


def test_add_test_disable_remove_in_the_browser(
    tab_server: tuple[str, FleetManager], page: Any, ui_worker: LocalWorker
) -> None:
    url, manager = tab_server
    page.goto(url, wait_until="networkidle")
    page.wait_for_selector("#distributed_status", timeout=WAIT_MS)
    assert "No workers yet" in page.inner_text("#distributed_status")

    add_worker(page, "desk", ui_worker.url)
    saved = json.loads(Path(manager.path).read_text())
    assert [(w["name"], w["url"]) for w in saved["workers"]] == [("desk", ui_worker.url)]

    click(page, "distributed_test")
    page.wait_for_function(
        "() => (document.querySelector('#distributed_message textarea') || {}).value?.includes('online')",
        timeout=WAIT_MS,
    )
    assert state_of(page, "desk") == "online"

    choose(page, "distributed_bench_size", "64x64, 4 steps (quick check)")
    click(page, "distributed_bench_one")
    page.wait_for_function(
        "() => (document.querySelector('#distributed_message textarea') || {}).value?.includes('Done.')",
        timeout=60_000,
    )
    assert "desk: " in field(page, "distributed_message").input_value()
    assert "images/min" in field(page, "distributed_message").input_value()
    page.wait_for_function(
        """() => document.querySelector('#distributed_status tr[data-worker="desk"]')
                 ?.innerText.includes('images/min')""",
        timeout=WAIT_MS,
    )
    assert json.loads(Path(manager.path).read_text())["workers"][0]["benchmark"]["ipm"] > 0

    choose(page, "distributed_selected", "(new worker)")
    wait_for_value(page, "distributed_name", "")
    add_worker(page, "gone", f"http://127.0.0.1:{free_port()}")
    click(page, "distributed_test")  # a save selects the worker it saved
    page.wait_for_function(
        """() => document.querySelector('#distributed_status tr[data-worker="gone"] .distributed-state')
                 ?.getAttribute('data-state') === 'offline'""",
        timeout=WAIT_MS,
    )
    assert "connection refused" in page.inner_text('#distributed_status tr[data-worker="gone"]')
    shots = os.environ.get("DISTRIBUTED_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "tab.png"), full_page=True)

    click(page, "distributed_disable")
    page.wait_for_function(
        """() => document.querySelector('#distributed_status tr[data-worker="gone"] .distributed-state')
                 ?.getAttribute('data-state') === 'disabled'""",
        timeout=WAIT_MS,
    )
    assert json.loads(Path(manager.path).read_text())["workers"][1]["enabled"] is False

    click(page, "distributed_remove")
    page.wait_for_selector('#distributed_status tr[data-worker="gone"]', state="detached", timeout=WAIT_MS)
    assert [w["name"] for w in json.loads(Path(manager.path).read_text())["workers"]] == ["desk"]


SECRET = "hunter2-secret"
SECRET_FORMS = (SECRET, base64.b64encode(SECRET.encode()).decode())  # as typed, and as a careless encoding would


def input_values(page: Any) -> list[str]:
    """The live .value of every input, textarea and select (page.content() holds none of what was typed or set)."""
    script = """() => {
        const values = [];
        const visit = (root) => {
            root.querySelectorAll('input, textarea, select').forEach((box) => values.push(String(box.value)));
            root.querySelectorAll('*').forEach((node) => node.shadowRoot && visit(node.shadowRoot));
        };
        visit(document);
        return values;
    }"""
    values: list[str] = page.evaluate(script)
    return values


def assert_no_secret(values: list[str], when: str) -> None:
    leaks = [value for value in values if any(secret in value for secret in SECRET_FORMS)]
    assert leaks == [], f"{when}: the password reached the browser in {leaks[0][:300]!r}"


def select_worker(page: Any, name: str, user: str) -> None:
    choose(page, "distributed_selected", name)
    wait_for_value(page, "distributed_name", name)
    wait_for_value(page, "distributed_user", user)


def test_password_is_never_sent_to_the_browser(
    tab_server: tuple[str, FleetManager], page: Any, received: Received
) -> None:
    """Saved, selected, reloaded and selected again: no answer, frame or form field ever holds the password."""
    url, manager = tab_server
    user = "sd-user-7"
    page.goto(url, wait_until="networkidle")
    field(page, "distributed_name").fill("lab")
    field(page, "distributed_url").fill("http://127.0.0.1:9")
    field(page, "distributed_user").fill(user)
    field(page, "distributed_password").fill(SECRET)
    click(page, "distributed_save")
    page.wait_for_function(
        "() => (document.querySelector('#distributed_message textarea') || {}).value?.startsWith('Added lab.')",
        timeout=WAIT_MS,
    )
    assert json.loads(Path(manager.path).read_text())["workers"][0]["auth"]["password"] == SECRET
    assert_no_secret(input_values(page), "after saving")  # the answer to the save empties the field typed in

    choose(page, "distributed_selected", "(new worker)")
    wait_for_value(page, "distributed_name", "")
    mark = received.mark()
    select_worker(page, "lab", user)
    assert_no_secret(input_values(page), "after selecting the worker")
    # the recorder saw the answer that filled the form (since the mark, only that answer names the user)
    assert any(user in text for text in received.texts(since=mark)), "the selection's answer was not recorded"

    page.reload(wait_until="networkidle")
    page.wait_for_selector('#distributed_status tr[data-worker="lab"]', timeout=WAIT_MS)
    assert "password stored" in page.inner_text('#distributed_status tr[data-worker="lab"]')
    assert_no_secret(input_values(page), "after a reload")
    select_worker(page, "lab", user)
    assert_no_secret(input_values(page), "after selecting the worker on the reloaded page")
    page.wait_for_load_state("networkidle")

    assert received.unaccounted() == []
    assert len(received.bodies) > 2 and (received.frames or received.streams), "gradio's queue traffic is missing"
    assert_no_secret(received.texts(), "in what the server sent")


def test_a_reloaded_page_offers_every_saved_worker(tab_server: tuple[str, FleetManager], page: Any) -> None:
    url, _ = tab_server
    page.goto(url, wait_until="networkidle")
    add_worker(page, "lab", "http://127.0.0.1:9")
    page.reload(wait_until="networkidle")
    page.wait_for_selector('#distributed_status tr[data-worker="lab"]', timeout=WAIT_MS)
    box = page.locator("#distributed_selected input").first
    box.click()
    box.fill("lab")
    page.locator("#distributed_selected ul.options li", has_text="lab").first.click(timeout=5_000)
    wait_for_value(page, "distributed_name", "lab")
