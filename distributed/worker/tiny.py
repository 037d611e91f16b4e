"""The built-in tiny model: random weights from a fixed seed, SD1.x-shaped, fast on a CPU.

Used by tests, benchmarks and the demo, where no real checkpoint can be downloaded. The VAE has four blocks so the
latent is 1/8 of the image, like real Stable Diffusion; everything else is as small as it can usefully be.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from distributed.worker.components import Components

TINY_SEED = 20241123
TEXT_WIDTH = 64
# A few frequent English pairs so that words become fewer, longer tokens; the rest falls back to bytes.
_MERGES = ["t h", "i n", "e r", "a n", "o n", "r e", "th e</w>", "e d</w>", "i n</w>", "a t</w>"]


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's table, which CLIP shares)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _write_tokenizer_files(folder: Path) -> None:
    base = _byte_symbols()
    words = base + [c + "</w>" for c in base]
    words += ["".join(pair.split()) for pair in _MERGES]
    words += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")
    config = {"model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def build_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory(prefix="distributed-tiny-") as tmp:
        folder = Path(tmp)
        _write_tokenizer_files(folder)
        # from_pretrained reads the same two files on transformers 4 and 5 (their constructors differ)
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        return tokenizer


def build_tiny_components() -> Components:
    """Build the tiny model; the same weights on every machine (seeded, CPU initialisation)."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer.get_vocab()),
                hidden_size=TEXT_WIDTH,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        # a non-zero output bias, as trained CLIPs have: A1111's emphasis restores the mean of the conditioning,
        # which for a zero-mean output is a division of rounding noise
        final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        with torch.no_grad():
            final_norm.bias.copy_(0.5 + 0.1 * torch.randn(final_norm.bias.shape))
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
        )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return Components(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler.config),
    )
