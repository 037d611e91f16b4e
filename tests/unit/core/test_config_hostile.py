"""workers.json under hostile content (property-based): never a crash, always a clear error, nothing overwritten."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed.engine.config import FleetConfig, load_config, parse_config, save_config
from distributed.errors import ConfigError

EXAMPLE = json.loads((Path(__file__).resolve().parents[3] / "workers.example.json").read_text(encoding="utf-8"))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "version",
        "workers",
        "options",
        "name",
        "url",
        "enabled",
        "auth",
        "user",
        "password",
        "password_env",
        "verify_tls",
        "caps",
        "max_batch",
        "max_pixels",
        "cost_model",
        "overhead_s",
        "seconds_per_unit",
        "benchmark",
        "timeouts",
        "connect_s",
        "extra_slack",
        "extra_images",
        "when",
        "ipm",
        "bogus",
    ]
)


def _mutate(data: Any, path: list[Any], value: Any) -> Any:
    """Replace the value at a path (or add the key) inside a copy of data."""
    if not path:
        return value
    head, *rest = path
    if isinstance(data, dict):
        copy = dict(data)
        key = head if isinstance(head, str) else (list(copy)[head % len(copy)] if copy else "x")
        copy[key] = _mutate(copy.get(key), rest, value)
        return copy
    if isinstance(data, list) and data:
        copy = list(data)
        index = head % len(copy) if isinstance(head, int) else 0
        copy[index] = _mutate(copy[index], rest, value)
        return copy
    return value


def _must_be_clear(data: Any) -> None:
    try:
        config = parse_config(data, "/fuzz/workers.json")
    except ConfigError as error:
        text = str(error)
        assert text.startswith("file /fuzz/workers.json")
        assert len(text) < 2000
        return
    assert isinstance(config, FleetConfig)


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.one_of(keys, st.integers(0, 5)), min_size=1, max_size=5), value=json_values)
def test_mutated_example_never_crashes(path: list[Any], value: Any) -> None:
    _must_be_clear(_mutate(EXAMPLE, path, value))


@settings(max_examples=3000, deadline=None)
@given(data=json_values)
def test_arbitrary_json_never_crashes(data: Any) -> None:
    _must_be_clear(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_arbitrary_files_are_refused_clearly_and_never_overwritten(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "workers.json"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as error:
        assert str(path) in str(error)
        with pytest.raises(ConfigError, match="does not parse"):
            save_config(FleetConfig(), path)
        assert path.read_bytes() == raw


def test_concurrent_saves_never_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    configs = [
        parse_config({"workers": [{"name": f"w{i}", "url": f"http://10.0.0.{i}:7860"} for i in range(n + 1)]})
        for n in range(6)
    ]
    errors: list[BaseException] = []

    def writer(config: FleetConfig) -> None:
        try:
            for _ in range(40):
                save_config(config, path)
                load_config(path)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c,)) for c in configs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    final = load_config(path)
    assert final in configs
    assert load_config(path.with_name("workers.json.bak")) in configs
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failed_save_keeps_the_old_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = tmp_path / "workers.json"
    save_config(parse_config({"workers": [{"name": "a", "url": "http://h:1"}]}), path)
    before = path.read_bytes()

    def failing_fsync(descriptor: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)  # the disk fills up (or turns read-only) mid-save
    with pytest.raises(ConfigError) as raised:
        save_config(parse_config({"workers": [{"name": "b", "url": "http://g:2"}]}), path)
    assert "previous file is unchanged" in str(raised.value)
    assert os.strerror(code) in str(raised.value)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
