"""Offline loading of an A1111 single-file checkpoint: what the CLIP folder must hold, and the messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from distributed.worker.checkpoints import CheckpointInfo, CheckpointLoadError
from distributed.worker.loader import ModelCache

SHARED = Path(__file__).resolve().parents[4] / "shared" / "webui-tiny-model"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/webui-tiny-model")


def _checkpoint(folder: Path, clip: Path) -> CheckpointInfo:
    path = folder / "tiny-sd.safetensors"
    path.symlink_to(SHARED / "tiny-sd.safetensors")
    yaml = (SHARED / "tiny-sd.yaml").read_text(encoding="utf-8").replace("TINY_CLIP_DIR", str(clip))
    path.with_suffix(".yaml").write_text(yaml, encoding="utf-8")
    return CheckpointInfo(path.name, path)


def test_text_encoder_weights_come_from_the_checkpoint(tmp_path: Path) -> None:
    """The CLIP folder needs no weights, and the checkpoint's own encoder is used (not the folder's)."""
    from safetensors.torch import load_file

    clip = tmp_path / "clip"
    shutil.copytree(SHARED / "tiny-clip", clip, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    components = ModelCache._load(_checkpoint(tmp_path, clip))
    state = load_file(str(SHARED / "tiny-sd.safetensors"))
    key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    encoder = getattr(components.text_encoder, "text_model", components.text_encoder)
    assert torch.equal(encoder.final_layer_norm.weight, state[key])
    token_key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    assert torch.equal(encoder.embeddings.token_embedding.weight, state[token_key])


def test_a_clip_folder_without_config_is_named(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    shutil.copytree(SHARED / "tiny-clip", clip, ignore=shutil.ignore_patterns("config.json", "*.safetensors"))
    with pytest.raises(CheckpointLoadError, match=r"tiny-sd\.safetensors: the CLIP text encoder config") as raised:
        ModelCache._load(_checkpoint(tmp_path, clip))
    assert str(clip) in str(raised.value) and "\n" not in str(raised.value).split(" (")[0]


def test_a_missing_tokenizer_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointLoadError, match=r"the CLIP tokenizer .*nowhere.* is not on this machine"):
        ModelCache._load(_checkpoint(tmp_path, tmp_path / "nowhere"))
