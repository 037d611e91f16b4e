"""The parts of a loaded Stable Diffusion model that the sampling loop needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from distributed.worker.kdiffusion import DiscreteSchedule


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict[str, Any]
    _schedule: list[DiscreteSchedule] = field(default_factory=list, repr=False, compare=False)

    def noise_schedule(self) -> DiscreteSchedule:
        """The model's 1000 training noise levels, built as ldm builds them (A1111 samples on these)."""
        if not self._schedule:
            config = self.scheduler_config
            start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
            steps = int(config.get("num_train_timesteps", 1000))
            if config.get("beta_schedule", "scaled_linear") == "linear":
                betas = torch.linspace(start, end, steps, dtype=torch.float64)
                alphas = torch.tensor(np.cumprod(1.0 - betas.numpy(), axis=0), dtype=torch.float32)
                self._schedule.append(DiscreteSchedule(alphas))
            else:
                self._schedule.append(DiscreteSchedule.scaled_linear(start, end, steps))
        return self._schedule[0]

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str, dtype: torch.dtype) -> Components:
        if self.device == torch.device(device) and self.dtype == dtype:
            return self
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype)
        return self
