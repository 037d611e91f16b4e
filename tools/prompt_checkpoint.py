"""Build a tiny SD1.x checkpoint in which the prompt matters, and a LoRA for it, from a fixed seed.

The tiny-sd test checkpoint has random weights with a weak cross-attention, so two different prompts give
nearly the same picture. This one strengthens every cross-attention (attn2) of the UNet so that the text
conditioning dominates the noise prediction, which makes prompts, emphasis, clip skip and LoRAs testable.

Usage: python tools/prompt_checkpoint.py OUT_DIR --clip-dir /path/to/tiny-clip
Writes tiny-prompt.safetensors (ldm/CompVis keys), tiny-prompt.yaml (its ldm config, cond_stage_config.params.version
= the clip folder) and tiny-prompt-lora.safetensors (kohya format, rank 4: every attn2 of the UNet and every
self-attention projection of the text encoder).

The checkpoint's text encoder is the clip folder's with a new final layer norm bias (see text_encoder_state). A1111
loads it from the checkpoint; with diffusers, load the `cond_stage_model.transformer.` keys into the CLIPTextModel
passed to from_single_file (as distributed.worker.loader does), or the pictures will not match A1111's.

The VAE's posterior has a log-variance of -30 (a spread of 3e-7): A1111 encodes img2img and image-upscaled hires-fix
inputs by sampling the posterior with torch's global generator, left in whatever state the job before left it,
which a random VAE's spread of about 1 would turn into a different picture on each machine.

The UNet keeps two resnets per level, as SD1.x does, because A1111's Lora extension converts diffusers-style
LoRA names to CompVis blocks by SD1.x's block arithmetic (three blocks per level).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

SEED = 20240601
NAME = "tiny-prompt"
LEVELS = 2  # channel_mult [1, 2]
PER_LEVEL = 2  # num_res_blocks, as in SD1.x
RANK = 4


class Strength(NamedTuple):
    """Multipliers on the random weights, chosen by rendering in A1111 (a NamedTuple, so that tests may load
    this file by path without registering it as a module)."""

    attn2_q: float = 6.0  # sharper attention over the tokens
    attn2_kv: float = 3.0
    attn2_out: float = 8.0  # cross-attention outweighs the residual stream
    conv_out: float = 1.0
    text_bias: float = 1.0
    lora: float = 1.0


STRENGTH = Strength()

UNET_YAML = {"model_channels": 32, "context_dim": 64, "num_heads": 2}

YAML = """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: 64
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 32
        attention_resolutions: [ 1, 2 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2 ]
        num_heads: 2
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: 64
        use_checkpoint: False
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 32
          ch_mult: [ 1, 1, 1, 1 ]
          num_res_blocks: 1
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        version: {clip_dir}
"""

UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

Renames = list[tuple[str, str, dict[str, str]]]


def unet_renames() -> Renames:
    """(diffusers prefix, ldm prefix, renames of what follows) for the UNet, as in diffusers' reverse script."""
    out: Renames = [
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
    ]
    out += [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.", UNET_RESNET) for j in range(2)]
    step = PER_LEVEL + 1
    for i in range(LEVELS):
        for j in range(PER_LEVEL):
            out.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{1 + i * step + j}.0.", UNET_RESNET))
            out.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{1 + i * step + j}.1.", {}))
        for j in range(step):
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * step + j}.0.", UNET_RESNET))
            out.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * step + j}.1.", {}))
        if i < LEVELS - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * step}.0.op.", {}))
            out.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * step + PER_LEVEL}.2.", {}))
    return out


def vae_renames(levels: int) -> Renames:
    out: Renames = [
        ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1.", VAE_ATTN),
        ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1.", VAE_ATTN),
        ("encoder.conv_norm_out.", "encoder.norm_out.", {}),
        ("decoder.conv_norm_out.", "decoder.norm_out.", {}),
    ]
    for part in ("encoder", "decoder"):
        out += [(f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}.", VAE_RESNET) for j in range(2)]
    for i in range(levels):
        up = levels - 1 - i
        out += [(f"encoder.down_blocks.{i}.resnets.0.", f"encoder.down.{i}.block.0.", VAE_RESNET)]
        out += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{up}.block.{j}.", VAE_RESNET) for j in range(2)]
        out.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", {}))
        out.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample.", {}))
    return out


def to_ldm(state: dict[str, torch.Tensor], renames: Renames, prefix: str) -> dict[str, torch.Tensor]:
    """diffusers keys to CompVis keys; keys no rename covers (conv_in, quant_conv...) keep their name."""
    out = {}
    for key, tensor in state.items():
        new, value = key, tensor
        for src, dst, inner in renames:
            if key.startswith(src):
                rest = key[len(src) :]
                for a, b in inner.items():
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
                new = dst + rest
                if inner is VAE_ATTN and value.dim() == 2:
                    value = value[:, :, None, None]  # ldm's VAE attention uses 1x1 convolutions
                break
        out[prefix + new] = value.contiguous()
    return out


def make_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 64),
        layers_per_block=PER_LEVEL,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=UNET_YAML["context_dim"],
        attention_head_dim=UNET_YAML["num_heads"],  # diffusers' legacy name for the number of heads
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
    )
    with torch.no_grad():  # log-variance -30: A1111 samples the VAE posterior with an unseeded generator
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-30.0)
    strengthen(unet, STRENGTH)
    return unet, vae


def strengthen(unet: torch.nn.Module, s: Strength) -> None:
    factors = {".attn2.to_q.": s.attn2_q, ".attn2.to_k.": s.attn2_kv, ".attn2.to_v.": s.attn2_kv}
    factors[".attn2.to_out.0."] = s.attn2_out
    with torch.no_grad():
        for name, param in unet.named_parameters():
            factor = next((f for part, f in factors.items() if part in name), 1.0)
            param.mul_(s.conv_out if name.startswith("conv_out.") else factor)


def text_encoder_state(clip_state: dict[str, torch.Tensor], s: Strength) -> dict[str, torch.Tensor]:
    """The clip folder's text encoder with a final layer norm whose output mean is far from zero.

    A1111's emphasis rescales the weighted embeddings by old mean / new mean; with a zero-bias layer norm both
    means are rounding noise and `(cat:1.5)` would scale the whole prompt by an arbitrary factor.
    """
    out = dict(clip_state)
    gen = torch.Generator().manual_seed(SEED + 2)
    bias = out["text_model.final_layer_norm.bias"]
    out["text_model.final_layer_norm.bias"] = s.text_bias * (1.0 + 0.5 * torch.randn(bias.shape, generator=gen))
    return out


def lora_targets(unet: torch.nn.Module, text_layers: int) -> dict[str, tuple[int, int]]:
    """kohya name -> (out_features, in_features) of each layer the LoRA patches."""
    out = {}
    for name, module in unet.named_modules():
        if ".attn2." in name and isinstance(module, torch.nn.Linear):
            out["lora_unet_" + name.replace(".", "_")] = (module.out_features, module.in_features)
    width = UNET_YAML["context_dim"]
    for i in range(text_layers):
        for proj in ("q", "k", "v", "out"):
            out[f"lora_te_text_model_encoder_layers_{i}_self_attn_{proj}_proj"] = (width, width)
    return out


def make_lora(targets: dict[str, tuple[int, int]], strength: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    out = {}
    for name, (n_out, n_in) in sorted(targets.items()):
        out[f"{name}.lora_down.weight"] = torch.randn(RANK, n_in, generator=gen) / n_in**0.5
        out[f"{name}.lora_up.weight"] = torch.randn(n_out, RANK, generator=gen) * strength / RANK**0.5
        out[f"{name}.alpha"] = torch.tensor(float(RANK))
    return out


def build(out_dir: Path, clip_dir: Path) -> dict[str, Path]:
    """Write the checkpoint, its yaml and the LoRA into out_dir; return their paths by kind."""
    clip_dir = clip_dir.resolve()
    text = text_encoder_state(load_file(str(clip_dir / "model.safetensors")), STRENGTH)
    text_layers = 1 + max(int(k.split(".")[3]) for k in text if k.startswith("text_model.encoder.layers."))
    unet, vae = make_models()
    state = {f"cond_stage_model.transformer.{k}": v.contiguous() for k, v in text.items()}
    state |= to_ldm(unet.state_dict(), unet_renames(), "model.diffusion_model.")
    state |= to_ldm(vae.state_dict(), vae_renames(4), "first_stage_model.")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "checkpoint": out_dir / f"{NAME}.safetensors",
        "config": out_dir / f"{NAME}.yaml",
        "lora": out_dir / f"{NAME}-lora.safetensors",
    }
    save_file(state, str(paths["checkpoint"]))
    paths["config"].write_text(YAML.format(clip_dir=clip_dir))
    save_file(make_lora(lora_targets(unet, text_layers), STRENGTH.lora), str(paths["lora"]))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--clip-dir", type=Path, required=True, help="a CLIPTextModel folder with its tokenizer")
    args = parser.parse_args()
    for kind, path in build(args.out_dir, args.clip_dir).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
