from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributed.engine.config import load_config
from distributed.engine.priorart import import_prior_art, looks_like_prior_art
from distributed.errors import ConfigError

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


# What v2.3.0's own save path writes (read from its scripts/spartan/worker.py and world.py at tag v2.3.0): Worker keeps
# the address as typed (scheme and slash stripped only from a local variable), sets port 443 for an https:// address,
# casts a missing user and password with str() to "None", and World.save_config dumps {label: Worker_Model} entries.
SAVED_BY_V230 = {
    "workers": [
        {"master": {"avg_ipm": 9.1, "master": True, "address": "localhost", "port": 7860, "eta_percent_error": [],
                    "tls": False, "state": 1, "user": "None", "password": "None", "pixel_cap": -1}},
        {"lab": {"avg_ipm": 14.5, "master": False, "address": "https://gpu.lab.example/", "port": 443,
                 "eta_percent_error": [2.0], "tls": True, "state": 1, "user": "None", "password": "None",
                 "pixel_cap": -1}},
        {"desk": {"avg_ipm": 0.0, "master": False, "address": "http://192.168.1.20", "port": 7861,
                  "eta_percent_error": [], "tls": False, "state": 5, "user": "sd", "password": "pw", "pixel_cap": -1}},
        {"plain": {"avg_ipm": 3.0, "master": False, "address": "box.local", "port": 7860, "eta_percent_error": [],
                   "tls": False, "state": 4, "user": "None", "password": "None", "pixel_cap": 1048576}},
    ],
    "benchmark_payload": {"prompt": "A herd of cows grazing at the bottom of a sunny valley", "negative_prompt": "",
                          "steps": 20, "width": 512, "height": 512, "batch_size": 1},
    "job_timeout": 3, "enabled": True, "enabled_i2i": True, "complement_production": True, "step_scaling": False,
}  # fmt: skip


def test_a_config_saved_by_v230_imports_with_schemes_and_none_strings() -> None:
    assert looks_like_prior_art(SAVED_BY_V230)
    config, _ = import_prior_art(SAVED_BY_V230, "distributed-config.json")
    by_name = {w.name: w for w in config.workers}
    assert sorted(by_name) == ["desk", "lab", "plain"]
    assert by_name["lab"].url == "https://gpu.lab.example:443"  # not https://https://...
    assert by_name["lab"].auth is None  # "None"/"None" is no auth, not a user called None
    assert by_name["desk"].url == "http://192.168.1.20:7861" and not by_name["desk"].enabled
    assert by_name["desk"].auth is not None and by_name["desk"].auth.user == "sd"
    assert by_name["plain"].url == "http://box.local:7860" and by_name["plain"].auth is None
