"""What the master's processing object holds, read for the fleet: the request fields, the checkpoint, the scripts'
arguments, and the job's lists; and the tensor form the webui's loop takes an image back in."""

from __future__ import annotations

from typing import Any

from PIL import Image

from distributed.engine.costmodel import Workload
from distributed.engine.jobs import JobSpec
from distributed.master.payload import Checkpoint, ScriptArgs, allowed_fields, build_payload, encode_image

# the master's options that change the picture, sent with every chunk; a headless worker honours the first group and
# refuses (422, so the chunk goes elsewhere) any of the second group that is not at A1111's default
CARRIED_OPTIONS = (
    "CLIP_stop_at_last_layers", "eta_noise_seed_delta", "randn_source", "emphasis", "eta_ancestral", "eta_ddim",
    "s_churn", "s_tmin", "s_tmax", "s_noise", "img2img_fix_steps",
    "pad_cond_uncond", "pad_cond_uncond_v0", "always_discard_next_to_last_sigma", "sgm_noise_multiplier",
    "use_old_scheduling", "use_old_emphasis_implementation", "sigma_min", "sigma_max", "rho", "comma_padding_backtrack",
    "img2img_extra_noise", "skip_early_cond", "s_min_uncond_all",
)  # fmt: skip
LISTS = (
    "all_prompts",
    "all_negative_prompts",
    "all_seeds",
    "all_subseeds",
    "all_hr_prompts",
    "all_hr_negative_prompts",
)


def read_checkpoint(sd_model: Any) -> Checkpoint | None:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    if info is None or not getattr(info, "title", None):
        return None
    return Checkpoint(
        title=str(info.title),
        model_name=str(getattr(info, "model_name", "") or ""),
        short_hash=getattr(info, "shorthash", None) or getattr(sd_model, "sd_model_hash", None),
        sha256=getattr(info, "sha256", None),
    )


def script_args(p: Any) -> tuple[ScriptArgs, ...]:
    runner = getattr(p, "scripts", None)
    args = tuple(getattr(p, "script_args", None) or ())
    found = []
    for script in getattr(runner, "alwayson_scripts", []) or []:
        name = getattr(script, "name", None)
        if name and script.args_to > script.args_from:
            found.append(ScriptArgs(str(name), args[script.args_from : script.args_to]))
    return tuple(found)


def request_fields(p: Any, kind: str) -> dict[str, Any]:
    fields = {name: getattr(p, name) for name in allowed_fields(kind) if hasattr(p, name)}
    if kind == "img2img":
        fields["init_images"] = [encode_image(image) for image in (getattr(p, "init_images", None) or [])]
        mask = getattr(p, "image_mask", None)
        fields["mask"] = encode_image(mask) if isinstance(mask, Image.Image) else None
    if not getattr(p, "enable_hr", False):
        for name in [f for f in fields if f.startswith("hr_")]:
            del fields[name]
    return fields


def build_spec(p: Any, kind: str, opts: Any, extra_images: bool, slack: float) -> JobSpec:
    overrides = dict(getattr(p, "override_settings", None) or {})
    overrides.pop("sd_model_checkpoint", None)
    overrides.pop("sd_vae", None)
    for key in CARRIED_OPTIONS:
        if hasattr(opts, key) and key not in overrides:
            overrides[key] = getattr(opts, key)
    payload = build_payload(kind, request_fields(p, kind), overrides)
    prompts, negatives = list(p.all_prompts), list(p.all_negative_prompts)
    return JobSpec(
        kind=kind,
        payload=payload,
        images=len(p.all_seeds),
        seed=int(p.all_seeds[0]),
        subseed=int(p.all_subseeds[0]),
        subseed_strength=float(getattr(p, "subseed_strength", 0) or 0),
        workload=Workload(int(p.width), int(p.height), int(p.steps)),
        extra_slack=slack if extra_images else None,
        prompts=prompts,
        negative_prompts=negatives,
    )


def to_tensor(image: Image.Image) -> Any:
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    # +0.5: the webui turns this back into bytes with 255 * x truncated, which must give the same bytes
    return torch.from_numpy((array + 0.5) / 255.0).permute(2, 0, 1)
