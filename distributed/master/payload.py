"""What the master sends a worker: an explicit allow-list of processing fields, and what a worker must have.

The webui adapter reads these fields off its processing object; everything else (paths, saving flags, model
objects, this extension's own arguments) stays on the master. Pure: no webui, gradio or torch.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from distributed.images import png_to_base64

COMMON_FIELDS = (
    "prompt",
    "negative_prompt",
    "subseed_strength",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "sampler_name",
    "scheduler",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "restore_faces",
    "tiling",
    "eta",
    "s_min_uncond",
    "s_churn",
    "s_tmax",
    "s_tmin",
    "s_noise",
    "refiner_checkpoint",
    "refiner_switch_at",
    "disable_extra_networks",
    "denoising_strength",
)
TXT2IMG_FIELDS = (
    *COMMON_FIELDS,
    "enable_hr",
    "firstphase_width",
    "firstphase_height",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "hr_checkpoint_name",
    "hr_sampler_name",
    "hr_scheduler",
    "hr_prompt",
    "hr_negative_prompt",
)
IMG2IMG_FIELDS = (
    *COMMON_FIELDS,
    "resize_mode",
    "image_cfg_scale",
    "mask_blur_x",
    "mask_blur_y",
    "mask_round",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "initial_noise_multiplier",
)
IMAGE_FIELDS = ("init_images", "mask")  # img2img only; the adapter hands them over already as base64 PNG
OWN_SCRIPT = "distributed"  # this extension's always-on script, by its lower-cased title
OWN_API_REQUEST = {"alwayson_scripts": {OWN_SCRIPT: {"args": [False]}}}  # a request this webui renders itself
LORA_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)(?::[^>]*)?>", re.IGNORECASE)
JSON_SCALARS = (str, int, float, bool, type(None))


def allowed_fields(kind: str) -> tuple[str, ...]:
    if kind == "txt2img":
        return TXT2IMG_FIELDS
    if kind == "img2img":
        return (*IMG2IMG_FIELDS, *IMAGE_FIELDS)
    raise ValueError(f"unknown job kind {kind!r}")


def build_payload(kind: str, fields: Mapping[str, Any], override_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The request body shared by every chunk: allowed fields only, values that JSON can carry."""
    payload: dict[str, Any] = {}
    for name in allowed_fields(kind):
        value = jsonable(fields.get(name))
        if value is not None:
            payload[name] = value
    payload["styles"] = []  # the master's prompts already have its styles applied
    payload["override_settings"] = {k: jsonable(v) for k, v in override_settings.items()}
    payload["override_settings_restore_afterwards"] = True
    return payload


class NotJsonable(TypeError):
    """A value a request cannot carry (a model, a tensor of unknown shape, an open file)."""


def encode_image(image: Image.Image) -> str:
    """A picture as a request carries it: base64 PNG, without PNG text chunks."""
    return png_to_base64(image, None)


def jsonable(value: Any, image: Callable[[Image.Image], str] = encode_image) -> Any:
    """A JSON-safe copy: images (PIL or HxWxC uint8 arrays) as base64 PNG, dataclasses and models as dicts."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value, image)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # the webui's "no limit" (s_tmax = inf): JSON has no such number; the worker's default is the same
    if isinstance(value, JSON_SCALARS):
        return value
    if isinstance(value, Image.Image):
        return image(value)
    if hasattr(value, "__array_interface__"):  # numpy arrays, without importing numpy here
        shape = value.__array_interface__.get("shape", ())
        if len(shape) in (2, 3) and str(getattr(value, "dtype", "")) == "uint8":
            return image(Image.fromarray(value))
        if len(shape) == 0:
            return value.item()
        raise NotJsonable(f"an array of shape {shape}")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, image) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, image) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), image) for f in dataclasses.fields(value)}
    for method in ("model_dump", "dict"):  # pydantic models (ControlNet units are one on some versions)
        if callable(getattr(value, method, None)):
            return jsonable(getattr(value, method)(), image)
    raise NotJsonable(type(value).__name__)


@dataclass(frozen=True)
class ScriptArgs:
    """One always-on script on the master with the arguments the user gave it."""

    name: str  # lower-cased title, as in A1111's alwayson_scripts
    args: tuple[Any, ...]


def forwarded_scripts(scripts: Iterable[ScriptArgs], worker_scripts: set[str]) -> tuple[dict[str, Any], list[str]]:
    """alwayson_scripts for a worker: those it has too; never this extension's own. Also the names not sent."""
    sent: dict[str, Any] = {}
    skipped: list[str] = []
    for script in scripts:
        if script.name == OWN_SCRIPT:
            continue
        if script.name not in worker_scripts:
            skipped.append(script.name)
            continue
        try:
            sent[script.name] = {"args": jsonable(list(script.args))}
        except NotJsonable as exc:
            skipped.append(f"{script.name} ({exc})")
    return sent, skipped


def alwayson_names(script_info: Iterable[Mapping[str, Any]], kind: str) -> set[str]:
    """Names of a worker's always-on scripts for txt2img or img2img, from its /sdapi/v1/script-info."""
    is_img2img = kind == "img2img"
    return {
        str(entry.get("name")).lower()
        for entry in script_info
        if entry.get("is_alwayson") and bool(entry.get("is_img2img")) == is_img2img and entry.get("name")
    }


def lora_names(*prompts: str) -> set[str]:
    return {match.group(1).strip() for text in prompts for match in LORA_TAG.finditer(text)}


@dataclass(frozen=True)
class Checkpoint:
    """The master's loaded checkpoint as the webui knows it."""

    title: str  # "name.safetensors [abcdef0123]"
    model_name: str = ""
    short_hash: str | None = None
    sha256: str | None = None


def match_checkpoint(models: Iterable[Mapping[str, Any]], want: Checkpoint) -> str | None:
    """The title of the worker's entry for the same checkpoint: by sha256, short hash, then name."""
    entries = list(models)

    def first(test: Callable[[Mapping[str, Any]], bool]) -> str | None:
        for entry in entries:
            if test(entry) and entry.get("title"):
                return str(entry["title"])
        return None

    if want.sha256:
        found = first(lambda e: str(e.get("sha256") or "").lower() == want.sha256.lower())  # type: ignore[union-attr]
        if found:
            return found
    if want.short_hash:
        short = want.short_hash.lower()
        found = first(
            lambda e: str(e.get("hash") or "").lower() == short or str(e.get("sha256") or "").lower().startswith(short)
        )
        if found:
            return found
    name = want.model_name or want.title.split(" [")[0].rsplit(".", 1)[0]
    return first(
        lambda e: (
            str(e.get("model_name") or "") == name
            or str(e.get("title") or "").split(" [")[0] == want.title.split(" [")[0]
        )
    )
