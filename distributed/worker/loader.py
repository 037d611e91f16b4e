"""Loading checkpoints into Components, offline: the tiny model, diffusers folders, A1111 single files.

A single-file checkpoint needs its ldm yaml beside it (A1111's `<name>.yaml` convention) or the SD1.x default,
and a CLIP tokenizer and text-encoder config on disk: the yaml's `cond_stage_config.params.version` when that is a
folder, else the Hugging Face cache (never the network). The text encoder's weights come from the checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from distributed.worker.checkpoints import CheckpointInfo, CheckpointLoadError, file_sha256
from distributed.worker.components import Components
from distributed.worker.tiny import build_tiny_components

logger = logging.getLogger(__name__)

_TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
_DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def components_sha256(components: Components) -> str:
    """A stable fingerprint of built-in weights, so the tiny model has an A1111-style hash too."""
    digest = hashlib.sha256()
    for module in (components.unet, components.vae, components.text_encoder):
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _clip_source(yaml_path: Path | None) -> str:
    if yaml_path is None:
        return _DEFAULT_CLIP
    from omegaconf import OmegaConf

    config: Any = OmegaConf.load(yaml_path)
    version = OmegaConf.select(config, "model.params.cond_stage_config.params.version", default=None)
    return str(version) if version else _DEFAULT_CLIP


def _load_single_file(path: Path) -> Components:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    yaml_path = path.with_suffix(".yaml")
    yaml = yaml_path if yaml_path.is_file() else None
    source = _clip_source(yaml)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        raise CheckpointLoadError(
            f"{path.name}: the CLIP tokenizer/text encoder config {source!r} is not on this machine "
            f"(set cond_stage_config.params.version in {path.with_suffix('.yaml').name} to a local folder): {exc}"
        ) from exc
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu")
    state = state.get("state_dict", state)
    encoder_state = {k[len(_TEXT_ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(_TEXT_ENCODER_PREFIX)}
    if encoder_state:
        text_encoder.load_state_dict(encoder_state, strict=False)
    kwargs: dict[str, Any] = {"text_encoder": text_encoder, "tokenizer": tokenizer, "safety_checker": None}
    if yaml is not None:
        kwargs["original_config"] = str(yaml)
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointLoadError(f"{path.name}: cannot be loaded offline as an SD1.x checkpoint: {exc}") from exc
    return Components(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))


def _load_diffusers_folder(path: Path) -> Components:
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None)
    except (OSError, ValueError) as exc:
        raise CheckpointLoadError(f"{path.name}: cannot be loaded as a diffusers folder: {exc}") from exc
    return Components(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))


def load_vae(components: Components, path: Path) -> Components:
    """The same model with another VAE (A1111's sd_vae), converting an ldm-layout file when needed."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu")
    state = state.get("state_dict", state)
    vae = AutoencoderKL.from_config(components.vae.config)
    if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in state):
        state = convert_ldm_vae_checkpoint(state, vae.config)
    try:
        vae.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointLoadError(f"VAE {path.name} does not fit this checkpoint: {exc}") from exc
    return Components(
        components.unet, vae.eval(), components.text_encoder, components.tokenizer, components.scheduler_config
    )


class ModelCache:
    """Keeps the last few loaded checkpoints, so a master switching per request does not reload each time."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._loaded: OrderedDict[str, Components] = OrderedDict()

    def get(self, info: CheckpointInfo) -> Components:
        key = info.name
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        components = self._load(info)
        self._loaded[key] = components
        while len(self._loaded) > self.size:
            self._loaded.popitem(last=False)
        return components

    @staticmethod
    def _load(info: CheckpointInfo) -> Components:
        logger.info("loading checkpoint %s", info.name)
        if info.path is None:
            components = build_tiny_components()
            info.sha256 = info.sha256 or components_sha256(components)
            return components
        if info.path.is_dir():
            components = _load_diffusers_folder(info.path)
        elif info.path.is_file():
            components = _load_single_file(info.path)
            info.sha256 = info.sha256 or file_sha256(info.path)
        else:
            raise CheckpointLoadError(f"{info.path} no longer exists")
        for module in (components.unet, components.vae, components.text_encoder):
            module.eval()
        return components
