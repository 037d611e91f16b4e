"""Request bodies of the worker's /sdapi/v1 generation routes: A1111 1.10.1's field names and defaults.

Unknown fields are ignored, as A1111 ignores them. Fields this worker knows but cannot honour (hires fix, refiner,
scripts, face restoration...) are refused with 422 naming the field rather than silently rendering something else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**53  # JSON-safe integers; seed + image index stays below torch's limit
MAX_BATCH_SIZE = 64
MAX_N_ITER = 1000
MAX_PROMPT = 20_000  # characters (about 66 chunks of 75 tokens); A1111's prompt-editing parse grows with its square


class Txt2ImgRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field("", max_length=MAX_PROMPT)
    negative_prompt: str = Field("", max_length=MAX_PROMPT)
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    n_iter: int = Field(1, ge=1, le=MAX_N_ITER)
    steps: int = Field(50, ge=1, le=1000)
    cfg_scale: float = 7.0
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = Field(None, ge=0.0, le=1.0)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = Field("", max_length=MAX_PROMPT)
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT)
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgRequest(Txt2ImgRequest):
    init_images: list[str] = Field(default_factory=list)
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float | None = Field(0.75, ge=0.0, le=1.0)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = Field(4, ge=0, le=256)
    mask_blur_y: int = Field(4, ge=0, le=256)
    mask_blur: int | None = Field(None, ge=0, le=256)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


# Fields that change the picture in ways this worker does not implement: (field, value that is harmless)
UNSUPPORTED: tuple[tuple[str, object], ...] = (
    ("hr_checkpoint_name", (None, "", "Use same checkpoint")),
    ("refiner_checkpoint", (None, "", "None")),  # A1111 reads an empty name as no refiner
    ("restore_faces", (None, False)),
    ("script_name", (None, "", "None")),
    ("infotext", None),
    ("firstpass_image", None),
    ("latent_mask", None),
)


class OptionsUpdate(BaseModel):
    """POST /sdapi/v1/options: any keys; the ones this worker understands are applied."""

    model_config = ConfigDict(extra="allow")
