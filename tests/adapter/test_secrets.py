"""The webui runtime with --distributed-debug: a job on workers that require auth leaves no secret in any log."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distributed.cli.localfleet import LocalWorker
from tests.adapter.test_script import make_p, run

USER, PASSWORD = "alice", "w0rker-pa55-that-must-not-leak"
WRONG = "wr0ng-pa55-that-must-not-leak"
MASTER_AUTH = ("boss", "ma5ter-pa55-that-must-not-leak")  # the webui's own --api-auth


def _basic(user: str, password: str) -> str:
    """The Authorization header's value for these credentials, as it travels."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def locked() -> Iterator[LocalWorker]:
    with LocalWorker("locked", emulate_ipm=240, extra_args=["--api-auth", f"{USER}:{PASSWORD}"]) as worker:
        yield worker


def test_debug_logs_of_a_job_on_workers_with_auth_hold_no_secret(
    webui: Any, locked: LocalWorker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # captured from before the runtime reads workers.json and builds the fleet's clients
    caplog.set_level(logging.DEBUG, logger="distributed")
    monkeypatch.setattr(webui.cmd_opts, "distributed_debug", True)
    monkeypatch.setattr(webui.cmd_opts, "api_auth", ":".join(MASTER_AUTH))
    monkeypatch.setenv("DISTRIBUTED_TEST_SECRET", PASSWORD)
    workers = [
        {"name": "file", "url": locked.url, "auth": {"user": USER, "password": PASSWORD}},
        {"name": "env", "url": locked.url, "auth": {"user": USER, "password_env": "DISTRIBUTED_TEST_SECRET"}},
        {"name": "wrong", "url": locked.url, "auth": {"user": USER, "password": WRONG}},
    ]
    path = Path(webui.cmd_opts.distributed_config)
    path.write_text(json.dumps({"workers": workers}), encoding="utf-8")
    path.chmod(0o600)

    processed = run(make_p(batch_size=4, seed=70), [True, [], True, False])  # orchestrator only: all from the fleet

    from distributed.webui.runtime import runtime

    assert runtime().flags.debug
    assert processed.all_seeds == [70, 71, 72, 73]
    labels = [text.split("Worker: ")[1].split(",")[0] for text in processed.infotexts[processed.index_of_first_image :]]
    assert len(labels) == 4 and set(labels) <= {"file", "env"}, labels
    assert runtime().manager.fleet.members["wrong"].state.value == "auth refused"
    said = [record.getMessage() for record in caplog.records]
    assert any(line.startswith(f"POST {locked.url}/sdapi/v1/txt2img -> 200") for line in said), said
    texts = [caplog.text, *(repr(vars(record)) for record in caplog.records), *said]
    texts += [*processed.infotexts, processed.info, processed.comments, repr(vars(webui.opts))]
    secrets = [PASSWORD, WRONG, MASTER_AUTH[1], _basic(USER, PASSWORD), _basic(USER, WRONG), _basic(*MASTER_AUTH)]
    for secret in secrets:
        leaks = [text for text in texts if secret in text]
        assert leaks == [], f"{secret!r} in {leaks[0][:300]!r}"
