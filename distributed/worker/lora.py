"""A1111-style LoRA: `<lora:name:te:unet>` prompt tags, the `Lora` folder, and reversible weight merging.

Follows webui 1.10.1's built-in Lora extension (networks.py, network.py, network_lora.py), reimplemented:

- tags: every `<kind:args>` leaves the prompt; `lora` and `lyco` tags become LoRAs, grouped by kind in order of
  first appearance; `<lora:n:w>` sets te = unet = w, a third argument or `unet=` sets unet, `te=` sets te, a
  fourth argument or `dyn=` keeps only the first ranks. A name given twice is one network, applied twice with the
  multipliers of its last tag (A1111 reuses the loaded object).
- merge: W += multiplier * scale * (up @ down), scale = alpha / rank (1 without alpha), LoRAs applied one after the
  other. The product is computed in A1111's `devices.dtype` (float32 for a float32 weight, else float16), on the
  weight's device, then added and cast back as `(W.to(dtype) + delta).to(W.dtype)`.
- keys: kohya names of diffusers modules (`lora_unet_down_blocks_0_...`, `lora_te_text_model_...`) and LDM names
  (`lora_unet_input_blocks_1_1_...`), both resolved against the modules this model really has. Where A1111 would
  skip a key or a whole file with a console message, this raises a LoraError instead: a worker must never render a
  picture that silently differs from the master's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from distributed.worker.components import Components

logger = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
LORA_FOLDERS = ("Lora", "LyCORIS")  # A1111's --lora-dir and --lyco-dir-backcompat defaults
_TAG = re.compile(r"<(\w+):([^>]+)>")  # modules/extra_networks.py re_extra_net
_LORA_KINDS = ("lora", "lyco")
_UNSUPPORTED_KINDS = ("hypernet",)  # registered in A1111, so they change its picture; this worker cannot
_LORA_PARTS = {"lora_up.weight", "lora_down.weight", "lora_mid.weight", "alpha", "scale"}
_PEFT_PARTS = {"lora_B.weight": "lora_up.weight", "lora_A.weight": "lora_down.weight"}
# A1111 reads these metadata keys first, in this order, when it shows a LoRA's metadata
_METADATA_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10}
_METADATA_ORDER["ss_tag_frequency"] = 20
_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


class LoraError(RuntimeError):
    """A LoRA that cannot be applied exactly as A1111 would apply it."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class LoraNotFoundError(LoraError, LookupError):
    """A prompt names a LoRA this worker does not have."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        shown = ", ".join(sorted(known)[:20]) or "none"
        super().__init__(f"LoRA {name!r} not found on this worker; it has: {shown}", name)


class LoraKeysError(LoraError):
    """A LoRA file with keys that match no module of this model, or that no supported LoRA type explains."""

    def __init__(self, path: Path, problem: str, keys: Sequence[str]) -> None:
        shown = ", ".join(sorted(keys)[:10]) + (f" (and {len(keys) - 10} more)" if len(keys) > 10 else "")
        super().__init__(f"LoRA {path.name}: {len(keys)} key(s) {problem}: {shown}", path.stem)
        self.path = path
        self.keys = sorted(keys)


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:...>` tag, its arguments read as A1111's ExtraNetworkLora.activate reads them."""

    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None


class LoraUse(NamedTuple):
    """One LoRA to merge: its file and multipliers; a plain (path, te, unet) tuple works as well."""

    path: Path
    te: float
    unet: float
    dyn: int | None = None


@dataclass
class LoraInfo:
    """A LoRA file on disk, as A1111's NetworkOnDisk; `as_api()` is one entry of GET /sdapi/v1/loras."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def alias(self) -> str:
        return str(self.metadata.get("ss_output_name", self.name))

    def as_api(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": self.metadata}

    def shorthash(self) -> str:
        """The 12-character hash A1111 writes into `Lora hashes:` (kohya's addnet hash of a safetensors file)."""
        if self.metadata.get("sshs_model_hash"):
            return str(self.metadata["sshs_model_hash"])[:12]
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            if self.path.suffix.lower() == ".safetensors":
                handle.seek(8 + int.from_bytes(handle.read(8), "little"))
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:12]


def read_metadata(path: Path) -> dict[str, Any]:
    """A safetensors file's metadata, with JSON object values parsed, in A1111's display order."""
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw: dict[str, str] = handle.metadata() or {}
    parsed: dict[str, Any] = {}
    for key, value in sorted(raw.items(), key=lambda item: _METADATA_ORDER.get(item[0], 999)):
        parsed[key] = value
        if value.startswith("{"):
            with suppress(ValueError):
                parsed[key] = json.loads(value)
    return parsed


def find_loras(models_dir: Path | None) -> dict[str, LoraInfo]:
    """The LoRAs under `<models-dir>/Lora` and `<models-dir>/LyCORIS`, by file stem; a later file wins a clash."""
    found: dict[str, LoraInfo] = {}
    for folder in (models_dir / sub for sub in LORA_FOLDERS) if models_dir else ():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts[:-1])
            if path.is_file() and path.suffix.lower() in LORA_SUFFIXES and not hidden:
                try:
                    found[path.stem] = LoraInfo(path.stem, path, read_metadata(path))
                except (OSError, ValueError) as exc:  # a damaged file is left out, as A1111 does
                    logger.warning("skipping LoRA %s: %s", path, exc)
    return found


def lookup(loras: Mapping[str, LoraInfo], name: str) -> LoraInfo:
    """Find by file name or by alias; an alias two files share (or 'none') answers only as a file name."""
    aliases: dict[str, LoraInfo] = {}
    forbidden = {"none"}  # A1111 also lists "Addams", capitalised, so a lower-cased name never meets it
    for info in loras.values():
        if info.alias in aliases:
            forbidden.add(info.alias.lower())
        aliases[info.name] = info
        aliases[info.alias] = info
    found = loras.get(name) if name.lower() in forbidden else aliases.get(name)
    if found is None:
        raise LoraNotFoundError(name, list(loras))
    return found


def _tag(items: list[str]) -> LoraTag:
    positional = [item for item in items if len(item.split("=", 2)) != 2]
    named = dict(item.split("=", 1) for item in items if len(item.split("=", 2)) == 2)
    if not positional:
        raise LoraError(f"<lora:{':'.join(items)}> names no LoRA")
    name = positional[0]
    try:
        te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
        unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
        dyn_text = named.get("dyn", positional[3] if len(positional) > 3 else None)
        dyn = int(dyn_text) if dyn_text is not None else None
    except ValueError as exc:
        raise LoraError(f"<lora:{':'.join(items)}>: {exc}", name) from exc
    return LoraTag(name, te, unet, dyn)


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove every `<kind:...>` tag as A1111's parse_prompt does (nothing else is touched) and read the LoRAs.

    A1111 reads the tags of the first prompt of a batch only, and never parses the negative prompt.
    """
    by_kind: dict[str, list[list[str]]] = {}

    def cut(match: re.Match[str]) -> str:
        by_kind.setdefault(match.group(1), []).append(match.group(2).split(":"))
        return ""

    text = _TAG.sub(cut, prompt)
    unsupported = [kind for kind in by_kind if kind in _UNSUPPORTED_KINDS]
    if unsupported:
        raise LoraError(f"<{unsupported[0]}:...> tags are not supported on this worker")
    tags = [_tag(items) for kind, found in by_kind.items() if kind in _LORA_KINDS for items in found]
    last = {tag.name: tag for tag in tags}  # one network object per name: its last tag's multipliers win
    return text, [last[tag.name] for tag in tags]


def resolve(tags: Sequence[LoraTag], loras: Mapping[str, LoraInfo]) -> list[LoraUse]:
    """The files and multipliers for `applied`; LoraNotFoundError names the first unknown LoRA."""
    return [LoraUse(lookup(loras, tag.name).path, tag.te, tag.unet, tag.dyn) for tag in tags]


def _ldm_unet_names(unet: nn.Module) -> dict[str, str]:
    """LDM (compvis) block prefix -> diffusers module path, read from the blocks this UNet really has."""
    names = {"input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
    names |= {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2"}
    names |= {"label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"}
    index = 1
    for i, block in enumerate(getattr(unet, "down_blocks", [])):
        for j in range(len(block.resnets)):
            names[f"input_blocks.{index}.0"] = f"down_blocks.{i}.resnets.{j}"
            names[f"input_blocks.{index}.1"] = f"down_blocks.{i}.attentions.{j}"
            index += 1
        if getattr(block, "downsamplers", None):
            names[f"input_blocks.{index}.0.op"] = f"down_blocks.{i}.downsamplers.0.conv"
            index += 1
    names |= {"middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0"}
    names["middle_block.2"] = "mid_block.resnets.1"
    index = 0
    for i, block in enumerate(getattr(unet, "up_blocks", [])):
        for j in range(len(block.resnets)):
            names[f"output_blocks.{index}.0"] = f"up_blocks.{i}.resnets.{j}"
            names[f"output_blocks.{index}.1"] = f"up_blocks.{i}.attentions.{j}"
            index += 1
        if getattr(block, "upsamplers", None):
            slot = 2 if getattr(block, "attentions", None) else 1
            names[f"output_blocks.{index - 1}.{slot}.conv"] = f"up_blocks.{i}.upsamplers.0.conv"
    return names


def ldm_unet_modules(unet: nn.Module) -> dict[str, str]:
    """Every LDM module name (dotted, without `diffusion_model.`) -> the diffusers module it is, in this UNet."""
    modules = dict(unet.named_modules())
    found: dict[str, str] = {}
    for ldm, diffusers in _ldm_unet_names(unet).items():
        if diffusers not in modules:
            continue
        for name, _ in modules[diffusers].named_modules(prefix=diffusers):
            rest = name[len(diffusers) + 1 :]
            head, _, tail = rest.partition(".")
            if ".resnets." in diffusers and head in _RESNET_TO_LDM:
                rest = _RESNET_TO_LDM[head] + (f".{tail}" if tail else "")
            found[f"{ldm}.{rest}" if rest else ldm] = name
    return found


def module_map(components: Components) -> dict[str, tuple[nn.Module, bool] | None]:
    """kohya key prefix -> (module, belongs to the text encoder); None where two modules share one key."""
    unet_modules = dict(components.unet.named_modules())
    keys: list[tuple[str, nn.Module, bool]] = []
    for name, module in unet_modules.items():
        keys.append(("lora_unet_" + name.replace(".", "_"), module, False))
    for ldm, name in ldm_unet_modules(components.unet).items():
        keys.append(("lora_unet_" + ldm.replace(".", "_"), unet_modules[name], False))
    for name, module in components.text_encoder.named_modules():
        # transformers 4 nests the model under `text_model.`, 5 does not; kohya's keys always carry it
        path = name if name.startswith("text_model") else f"text_model.{name}" if name else "text_model"
        for prefix in ("lora_te_", "lora_te1_"):
            keys.append((prefix + path.replace(".", "_"), module, True))
    found: dict[str, tuple[nn.Module, bool] | None] = {}
    for key, module, is_te in keys:
        seen = found.get(key, (module, is_te))
        found[key] = (module, is_te) if seen is not None and seen[0] is module else None
    return found


@dataclass
class _Layer:
    key: str
    module: nn.Module
    is_te: bool
    parts: dict[str, torch.Tensor]


def load_lora_file(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, read once while it is unchanged (each batch and hires pass merges again; the tensors
    are only read, never changed in place)."""
    stat = path.stat()
    return _read_lora_file(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_lora_file(path: Path, mtime_ns: int, size: int) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise LoraError(f"LoRA {path.name} holds no state dict", path.stem)
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def match_layers(path: Path, tensors: Mapping[str, torch.Tensor], modules: Mapping[str, Any]) -> list[_Layer]:
    """Group a file's tensors by module and check that each group is a LoRA this module can take."""
    layers: dict[str, _Layer] = {}
    unmatched: list[str] = []
    for key, tensor in tensors.items():
        prefix, _, part = key.partition(".")
        target = modules.get(prefix)
        if target is None:
            unmatched.append(key)
            continue
        layer = layers.setdefault(prefix, _Layer(prefix, target[0], target[1], {}))
        layer.parts[_PEFT_PARTS.get(part, part)] = tensor
    if unmatched:
        raise LoraKeysError(path, "match no module of this model", unmatched)
    unsupported = [f"{k}.{p}" for k, layer in layers.items() for p in layer.parts if p not in _LORA_PARTS]
    if unsupported:
        raise LoraKeysError(path, "are of a network type this worker does not apply", unsupported)
    incomplete = [k for k, layer in layers.items() if not {"lora_up.weight", "lora_down.weight"} <= set(layer.parts)]
    if incomplete:
        raise LoraKeysError(path, "lack lora_up or lora_down", incomplete)
    wrong = [k for k, layer in layers.items() if not isinstance(layer.module, (nn.Linear, nn.Conv2d))]
    if wrong:
        raise LoraKeysError(path, "target a layer that is neither Linear nor Conv2d", wrong)
    return list(layers.values())


def a1111_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """A1111's devices.dtype for a model whose weights have this dtype: float32 with --no-half, else float16."""
    return torch.float32 if weight_dtype == torch.float32 else torch.float16


def lora_delta(layer: _Layer, weight: torch.Tensor, multiplier: float, dyn: int | None = None) -> torch.Tensor:
    """multiplier * scale * (up @ down), shaped like `weight`, in the dtype A1111 computes it in."""
    dtype = a1111_dtype(weight.dtype)
    up, down = (layer.parts[k].to(dtype=dtype).to(weight.device) for k in ("lora_up.weight", "lora_down.weight"))
    rank = down.shape[0]
    up, down = up.reshape(up.shape[0], -1), down.reshape(rank, -1)
    if "lora_mid.weight" in layer.parts:  # LyCORIS CP decomposition (LoCon with use_tucker)
        mid = layer.parts["lora_mid.weight"].to(dtype=dtype).to(weight.device)
        delta = torch.einsum("n m k l, i n, m j -> i j k l", mid, up, down)
    else:
        if dyn is not None:
            up, down = up[:, :dyn], down[:dyn, :]
        delta = up @ down
    if delta.numel() != weight.numel():
        raise LoraError(f"{layer.key}: LoRA shape {tuple(delta.shape)} does not fit weight {tuple(weight.shape)}")
    delta = delta.reshape(weight.shape)
    if "scale" in layer.parts:
        scale = float(layer.parts["scale"].item())
    elif "alpha" in layer.parts:
        scale = float(layer.parts["alpha"].item()) / rank
    else:
        scale = 1.0
    return (delta * scale) * multiplier


@contextmanager
def applied(components: Components, loras: Sequence[LoraUse | tuple[Path, float, float]]) -> Iterator[None]:
    """Merge the LoRAs into the model's weights for the block, then restore the originals bit for bit.

    Every file is read and checked before any weight changes. The caller keeps other renders off these
    components meanwhile (the weights are shared).
    """
    if not loras:
        yield
        return
    modules = module_map(components)
    plan: list[tuple[list[_Layer], LoraUse]] = []
    for given in loras:
        use = LoraUse(*given)
        plan.append((match_layers(use.path, load_lora_file(use.path), modules), use))
    backups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for layers, use in plan:
                for layer in layers:
                    weight: torch.Tensor = layer.module.weight  # type: ignore[assignment]
                    if id(weight) not in backups:
                        backups[id(weight)] = (weight, weight.detach().to("cpu", copy=True))
                    delta = lora_delta(layer, weight, use.te if layer.is_te else use.unet, use.dyn)
                    weight.copy_((weight.to(delta.dtype) + delta).to(weight.dtype))
        logger.debug("merged %d LoRA(s) into %d weights", len(plan), len(backups))
        yield
    finally:
        with torch.no_grad():
            for weight, saved in backups.values():
                weight.copy_(saved)
