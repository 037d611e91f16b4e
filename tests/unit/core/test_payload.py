"""What the master sends a worker, what a worker must have, and how much the master keeps."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

from distributed.engine.costmodel import Workload
from distributed.master.payload import (
    Checkpoint,
    ScriptArgs,
    alwayson_names,
    build_payload,
    forwarded_scripts,
    lora_names,
    match_checkpoint,
)

WORKLOAD = Workload(64, 64, 4)


def test_only_allowed_fields_go_out() -> None:
    fields = {
        "prompt": "p",
        "steps": 4,
        "s_tmax": math.inf,
        "outpath_samples": "/home/me/outputs",
        "do_not_save_samples": True,
        "enable_hr": True,
        "hr_scale": 2.0,
        "init_images": ["x"],
    }
    payload = build_payload("txt2img", fields, {"CLIP_stop_at_last_layers": 2})
    assert payload == {
        "prompt": "p",
        "steps": 4,
        "enable_hr": True,
        "hr_scale": 2.0,
        "styles": [],
        "override_settings": {"CLIP_stop_at_last_layers": 2},
        "override_settings_restore_afterwards": True,
    }
    assert build_payload("img2img", fields, {})["init_images"] == ["x"]


def _decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_scripts_forwarded_only_to_workers_that_have_them_never_our_own() -> None:
    picture = Image.new("RGB", (8, 8), (10, 20, 30))
    array = np.full((4, 4, 3), 200, dtype=np.uint8)
    scripts = [
        ScriptArgs("controlnet", ({"enabled": True, "image": picture, "mask": array, "weight": 0.5},)),
        ScriptArgs("distributed", (True, ["a"], False, False)),
        ScriptArgs("adetailer", (True,)),
        ScriptArgs("broken", (object(),)),
    ]
    sent, skipped = forwarded_scripts(scripts, {"controlnet", "distributed", "broken"})
    assert set(sent) == {"controlnet"}
    unit = sent["controlnet"]["args"][0]
    assert unit["enabled"] is True and unit["weight"] == 0.5
    assert _decode(unit["image"]).getpixel((0, 0)) == (10, 20, 30)
    assert _decode(unit["mask"]).size == (4, 4)
    assert skipped[0] == "adetailer" and skipped[1].startswith("broken (")


def test_alwayson_names_by_tab() -> None:
    info = [
        {"name": "ControlNet", "is_alwayson": True, "is_img2img": False},
        {"name": "controlnet", "is_alwayson": True, "is_img2img": True},
        {"name": "x/y/z plot", "is_alwayson": False, "is_img2img": False},
    ]
    assert alwayson_names(info, "txt2img") == {"controlnet"}
    assert alwayson_names(info, "img2img") == {"controlnet"}


def test_lora_names() -> None:
    assert lora_names("a <lora:detail:0.6> b <LORA:style>", "<lyco:old:1>") == {"detail", "style", "old"}


def test_checkpoint_matching_by_hash_then_name() -> None:
    models = [
        {"title": "other.safetensors [1111111111]", "model_name": "other", "hash": "1111111111", "sha256": "11" * 32},
        {
            "title": "v15.safetensors [abcdef0123]",
            "model_name": "v15",
            "hash": "abcdef0123",
            "sha256": "abcdef0123" + "0" * 54,
        },
    ]
    assert (
        match_checkpoint(models, Checkpoint("renamed.ckpt [x]", sha256="ABCDEF0123" + "0" * 54)) == models[1]["title"]
    )
    assert (
        match_checkpoint(models, Checkpoint("renamed.ckpt [abcdef0123]", short_hash="abcdef0123")) == models[1]["title"]
    )
    assert match_checkpoint(models, Checkpoint("v15.safetensors [ffffffffff]", model_name="v15")) == models[1]["title"]
    assert match_checkpoint(models, Checkpoint("absent.safetensors [0000000000]", model_name="absent")) is None
