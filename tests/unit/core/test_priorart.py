from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributed.config import load_config
from distributed.errors import ConfigError
from distributed.priorart import import_prior_art, looks_like_prior_art

CURRENT = {
    "workers": [
        {"master": {"avg_ipm": 20.0, "master": True, "address": "localhost", "port": 7860, "state": 1}},
        {
            "big gpu": {
                "avg_ipm": 30.0,
                "address": "10.0.0.5",
                "port": 7861,
                "tls": True,
                "state": 1,
                "user": "sd",
                "password": "pw",
                "pixel_cap": 2000000,
                "eta_percent_error": [1.0],
            }
        },
        {"spare": {"avg_ipm": 0, "address": "spare.local", "port": 7860, "state": 5}},
    ],
    "benchmark_payload": {"prompt": "cows", "steps": 20, "width": 512, "height": 512, "batch_size": 1},
    "job_timeout": 3,
    "enabled": True,
    "complement_production": True,
}
LEGACY = {
    "laptop": {"avg_ipm": 5.0, "address": "192.168.0.9", "port": 7860, "master": False},
    "benchmark_payload": {"prompt": "cows"},
}


def test_current_layout_imports() -> None:
    assert looks_like_prior_art(CURRENT)
    config, notes = import_prior_art(CURRENT, "distributed-config.json")
    assert [w.name for w in config.workers] == ["big-gpu", "spare"]
    big = config.worker("big-gpu")
    assert big.url == "https://10.0.0.5:7861"
    assert big.auth is not None and big.auth.password is not None
    assert big.auth.password.get_secret_value() == "pw"
    assert big.caps.max_pixels == 2000000
    assert big.cost_model is not None and big.benchmark is not None and big.benchmark.ipm == 30.0
    assert not config.worker("spare").enabled
    assert config.worker("spare").cost_model is None
    assert any("extra_images" in note for note in notes)
    assert any("master" in note for note in notes)


def test_legacy_layout_imports() -> None:
    assert looks_like_prior_art(LEGACY)
    config, _ = import_prior_art(LEGACY, "workers.json")
    assert [(w.name, w.url) for w in config.workers] == [("laptop", "http://192.168.0.9:7860")]


def test_our_own_format_is_not_mistaken_for_it() -> None:
    assert not looks_like_prior_art({"version": 1, "workers": []})
    assert not looks_like_prior_art({"workers": [{"name": "a", "url": "http://h:1"}]})
    with pytest.raises(ConfigError):
        import_prior_art({"version": 1}, "x.json")


def test_loading_a_prior_art_file_points_to_the_import(tmp_path: Path) -> None:
    path = tmp_path / "distributed-config.json"
    path.write_text(json.dumps(CURRENT), encoding="utf-8")
    with pytest.raises(ConfigError, match="import-config"):
        load_config(path)
