"""The options a headless worker keeps (A1111's shared.opts, the part that matters here), and their checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed.worker.conditioning import EMPHASIS_MODES
from distributed.worker.noise import RANDN_SOURCES
from distributed.worker.requests_check import RequestFieldError

# keys A1111 clients and its API tests read from GET /options, at A1111 1.10.1's defaults (POST keeps any key given)
A1111_DEFAULTS: dict[str, Any] = {
    "samples_save": True,
    "samples_format": "png",
    "save_images_add_number": True,
    "grid_save": True,
    "send_seed": True,
    "send_size": True,
    "sd_checkpoint_cache": 0,
    "eta_noise_seed_delta": 0,
    "enable_emphasis": True,
    "outdir_samples": "",
    "show_progress_every_n_steps": 10,
    "emphasis": "Original",
    "randn_source": "GPU",
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "s_min_uncond": 0.0,
    "initial_noise_multiplier": 1.0,
    "img2img_fix_steps": False,
    "tiling": False,
}
# options that change the picture, at the only value this worker renders with (another value gets 422)
A1111_FIXED: dict[str, Any] = {
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    "use_old_scheduling": False,
    "use_old_emphasis_implementation": False,
    "sigma_min": 0.0,
    "sigma_max": 0.0,
    "rho": 0.0,
    "img2img_extra_noise": 0.0,
    "skip_early_cond": 0.0,
    "s_min_uncond_all": False,
    "batch_cond_uncond": True,
    "overlay_inpaint": True,
    "img2img_background_color": "#ffffff",
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "token_merging_ratio": 0.0,
    "token_merging_ratio_hr": 0.0,
    "CLIP_stop_at_last_layers_hr": 0,
    "img2img_color_correction": False,
    "upscaler_for_img2img": None,
    "use_old_hires_fix_width_height": False,
    "hires_fix_use_firstpass_conds": False,
    "sd_noise_schedule": "Default",
    "use_downcasted_alpha_bar": False,
    "enable_quantization": False,
    "comma_padding_backtrack": 20,
    "extra_networks_default_multiplier": 1.0,
    "lora_functional": False,
    "sd_unet": "Automatic",
    "face_restoration": False,
}


_OWN_KEYS = {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"}
_NUMBERS = ("eta_ancestral", "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "s_min_uncond",
            "initial_noise_multiplier")  # fmt: skip


def check_settings(settings: dict[str, Any], prefix: str) -> None:
    """Refuse option values that would change the picture in a way this worker cannot follow (422, naming them)."""
    clip_skip = settings.get("CLIP_stop_at_last_layers")
    if clip_skip is not None and (not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12):
        raise RequestFieldError(
            prefix + "CLIP_stop_at_last_layers", f"must be an integer from 1 to 12, got {clip_skip!r}"
        )
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "randn_source": (lambda v: v in RANDN_SOURCES, f"one of {', '.join(RANDN_SOURCES)}"),
        "eta_noise_seed_delta": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        "emphasis": (lambda v: v in EMPHASIS_MODES, f"one of {', '.join(EMPHASIS_MODES)}"),
        **{key: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number") for key in _NUMBERS},
    }
    for key, (valid, wanted) in checks.items():
        if key in settings and not valid(settings[key]):
            raise RequestFieldError(prefix + key, f"must be {wanted}, got {settings[key]!r}")
    for key, value in A1111_FIXED.items():
        if key in settings and settings[key] != value:
            raise RequestFieldError(prefix + key, f"the headless worker renders only with {value!r}")


@dataclass
class WorkerOptions:
    """The subset of A1111's shared.opts a headless worker honours."""

    sd_model_checkpoint: str
    sd_vae: str = "Automatic"
    CLIP_stop_at_last_layers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **A1111_DEFAULTS,
            **A1111_FIXED,
            **self.extra,
            "sd_model_checkpoint": self.sd_model_checkpoint,
            "sd_vae": self.sd_vae,
            "CLIP_stop_at_last_layers": self.CLIP_stop_at_last_layers,
            "samples_format": "png",
        }
