"""Loading checkpoints into Components, offline: the tiny model, diffusers folders, A1111 single files.

A single-file checkpoint needs its ldm yaml beside it (A1111's `<name>.yaml` convention) or the SD1.x default,
and a CLIP tokenizer and text-encoder config on disk: the yaml's `cond_stage_config.params.version` when that is a
folder, else the Hugging Face cache (never the network). The text encoder's weights come from the checkpoint; the
folder needs weights only for a checkpoint that has none.
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


def _text_encoder(path: Path, source: str, state: dict[str, torch.Tensor]) -> Any:
    """The CLIP text encoder with the checkpoint's own weights (A1111 uses those, not the folder's).

    Only the folder's config is needed when the checkpoint holds the encoder; its weights are read only when the
    checkpoint has none. transformers 4.x names the keys `text_model.*`, 5.x drops that prefix: both are matched.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    yaml_name = path.with_suffix(".yaml").name
    encoder_state = {k[len(_TEXT_ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(_TEXT_ENCODER_PREFIX)}
    try:
        if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
            raise OSError(f"no config.json in {source}")
        if not encoder_state:
            return CLIPTextModel.from_pretrained(source, local_files_only=True)
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(source, local_files_only=True))
    except (OSError, ValueError, AttributeError) as exc:
        what = "config (config.json)" if encoder_state else "weights (the checkpoint has none)"
        raise CheckpointLoadError(
            f"{path.name}: the CLIP text encoder {what} in {source!r} cannot be read offline; put the tokenizer "
            f"files and config.json there, or set cond_stage_config.params.version in {yaml_name} to such a "
            f"folder ({type(exc).__name__}: {exc})"
        ) from exc
    wanted = set(model.state_dict())
    renamed = {}
    for name, value in encoder_state.items():
        if name.endswith("position_ids"):
            continue
        key = name
        if key not in wanted and key.startswith("text_model."):
            key = key[len("text_model.") :]
        elif key not in wanted and "text_model." + key in wanted:
            key = "text_model." + key
        renamed[key] = value
    try:
        result = model.load_state_dict(renamed, strict=False)
    except RuntimeError as exc:  # shapes that differ from the config's
        raise CheckpointLoadError(
            f"{path.name}: its text encoder does not fit the CLIP config in {source!r}: {str(exc).splitlines()[-1]}"
        ) from exc
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointLoadError(
            f"{path.name}: its text encoder does not fit the CLIP config in {source!r} "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    return model


def _load_single_file(path: Path) -> Components:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer

    yaml_path = path.with_suffix(".yaml")
    yaml = yaml_path if yaml_path.is_file() else None
    source = _clip_source(yaml)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointLoadError(
            f"{path.name}: the CLIP tokenizer {source!r} is not on this machine (a folder with vocab.json and "
            f"merges.txt; set cond_stage_config.params.version in {yaml_path.name} to it): {exc}"
        ) from exc
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu")
    state = state.get("state_dict", state)
    text_encoder = _text_encoder(path, source, state)
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
        channels = int(components.unet.config.in_channels)
        if channels != 4:
            raise CheckpointLoadError(
                f"{info.name}: its UNet takes {channels} input channels (an inpainting or instruct-pix2pix model); "
                "the headless worker renders with 4-channel models only"
            )
        for module in (components.unet, components.vae, components.text_encoder):
            module.eval()
        return components
