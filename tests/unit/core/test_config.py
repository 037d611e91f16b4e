"""workers.json: validation that names file, worker and field; atomic saves; flags; the example file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from distributed.compat import validate
from distributed.engine.config import (
    FleetConfig,
    load_config,
    merge_workers,
    parse_config,
    parse_remotes,
    save_config,
)
from distributed.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_the_example_file_is_valid() -> None:
    config = load_config(REPO / "workers.example.json")
    assert [w.name for w in config.workers] == ["desk-4090", "lab-a6000", "old-laptop"]
    lab = config.worker("lab-a6000")
    assert lab.auth is not None and lab.auth.password_env == "LAB_WEBUI_PASSWORD"
    assert lab.caps.max_batch == 8
    assert not config.worker("old-laptop").enabled


def test_missing_file_is_an_empty_fleet(tmp_path: Path) -> None:
    assert load_config(tmp_path / "workers.json").workers == []


@pytest.mark.parametrize(
    ("data", "worker", "field", "words"),
    [
        ({"workers": [{"name": "a", "url": "http://h:1", "colour": "red"}]}, "a", "colour", "xtra"),
        ({"workers": [{"name": "a", "url": "ftp://h"}]}, "a", "url", "http"),
        ({"workers": [{"name": "a", "url": "http://h:99999"}]}, "a", "url", "port"),
        ({"workers": [{"name": "a", "url": "http://u:p@h:1"}]}, "a", "url", "credentials"),
        ({"workers": [{"url": "http://h:1"}]}, "#1", "name", ""),
        ({"workers": [{"name": "a", "url": "http://h:1"}, {"name": "a", "url": "http://g:1"}]}, "a", "name", "share"),
        ({"workers": [{"name": "a b", "url": "http://h:1"}]}, "a b", "name", "letters"),
        ({"workers": [{"name": "master", "url": "http://h:1"}]}, "master", "name", "master"),
        ({"workers": [{"name": "a", "url": "http://h:1", "auth": {"user": "u"}}]}, "a", "auth", "exactly one"),
        (
            {"workers": [{"name": "a", "url": "http://h:1", "caps": {"max_batch": 0}}]},
            "a",
            "caps.max_batch",
            "",
        ),
        ({"workers": [{"name": "a", "url": "http://h:1", "enabled": "sometimes"}]}, "a", "enabled", ""),
    ],
)
def test_errors_name_the_worker_and_field(data: dict, worker: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "/etc/workers.json")
    error = raised.value
    assert error.path == "/etc/workers.json"
    assert error.worker == worker
    assert error.field == field
    assert words.lower() in str(error).lower()
    assert "/etc/workers.json" in str(error) and repr(worker) in str(error)


def test_unknown_global_key_and_newer_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.extras"):
        parse_config({"options": {"extras": True}})
    with pytest.raises(ConfigError, match="newer release"):
        parse_config({"version": 99})


def test_corrupt_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    path.write_text('{"workers": [\n  {"name": "a",}\n]}', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value)
    assert "line 2" in str(raised.value)


def _config_with_password() -> FleetConfig:
    return parse_config({"workers": [{"name": "a", "url": "http://h:1", "auth": {"user": "u", "password": "hunter2"}}]})


def test_save_is_atomic_keeps_a_backup_and_hides_secrets(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    save_config(parse_config({"workers": [{"name": "a", "url": "http://h:1"}]}), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    secret = _config_with_password()
    save_config(secret, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["workers"][0]["auth"]["password"] == "hunter2"
    backup = path.with_name("workers.json.bak")
    assert json.loads(backup.read_text())["workers"][0]["url"] == "http://h:1"
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert load_config(path).workers[0].auth.password.get_secret_value() == "hunter2"  # type: ignore[union-attr]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_save_refuses_to_overwrite_a_file_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    path.write_text("{ this is what the user typed", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not parse"):
        save_config(FleetConfig(), path)
    assert path.read_text(encoding="utf-8") == "{ this is what the user typed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_failed_save_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    save_config(FleetConfig(), path)
    before = path.read_text()
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="previous file is unchanged"):
            save_config(_config_with_password(), path)
    finally:
        tmp_path.chmod(0o700)
    assert path.read_text() == before


def test_failed_save_on_a_missing_folder_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="not saved"):
        save_config(FleetConfig(), blocker / "workers.json")


def test_remotes_flag_and_merge() -> None:
    workers = parse_remotes("a:127.0.0.1:7860, b:https://gpu.example:443")
    assert [(w.name, w.url) for w in workers] == [("a", "http://127.0.0.1:7860"), ("b", "https://gpu.example:443")]
    merged = merge_workers(parse_config({"workers": [{"name": "a", "url": "http://old:1", "enabled": False}]}), workers)
    assert [(w.name, w.url, w.enabled) for w in merged.workers] == [
        ("a", "http://127.0.0.1:7860", False),
        ("b", "https://gpu.example:443", True),
    ]
    for bad in ("nohost", "a:host:port", "a:", ":h:1"):
        with pytest.raises(ConfigError, match="--distributed-remotes"):
            parse_remotes(bad)


def test_defaults_are_not_shared_between_configs() -> None:
    first = validate(FleetConfig, {})
    second = validate(FleetConfig, {})
    first.options.timeouts.connect_s = 9.0
    assert second.options.timeouts.connect_s == 3.0
