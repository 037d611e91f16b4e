"""Real headless workers on 127.0.0.1, started once per session as child processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distributed.cli.localfleet import LocalWorker
from tests.threadworker import ThreadWorker

SHARED_MODEL = Path(__file__).resolve().parents[3] / "shared" / "webui-tiny-model"
AUTH = ("alice", "s3cret:with-colon")


def _save_other_model(folder: Path) -> None:
    """A second checkpoint as a diffusers folder: the tiny model with its UNet weights nudged, seeded."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from distributed.worker.tiny import build_tiny_components

    parts = build_tiny_components()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in parts.unet.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    scheduler = DDIMScheduler.from_config(parts.scheduler_config)
    pipe = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _save_nudged_vae(path: Path) -> None:
    """A VAE file in diffusers key layout that fits the tiny model, with its decoder changed."""
    import torch
    from safetensors.torch import save_file

    from distributed.worker.tiny import build_tiny_components

    state = build_tiny_components().vae.state_dict()
    generator = torch.Generator().manual_seed(8)
    nudged = {
        key: value + torch.randn(value.shape, generator=generator) * 0.05 if key.startswith("decoder.") else value
        for key, value in state.items()
    }
    save_file({k: v.contiguous() for k, v in nudged.items()}, str(path))


def _save_ldm_vae(checkpoint: Path, path: Path) -> None:
    """The shared checkpoint's own VAE as a separate file, in A1111's (ldm) key layout."""
    from safetensors.torch import load_file, save_file

    prefix = "first_stage_model."
    state = load_file(str(checkpoint))
    save_file({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, str(path))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    checkpoints = root / "Stable-diffusion"
    checkpoints.mkdir()
    _save_other_model(checkpoints / "other")
    (root / "VAE").mkdir()
    _save_nudged_vae(root / "VAE" / "nudged.safetensors")
    if SHARED_MODEL.is_dir():
        (checkpoints / "tiny-sd.safetensors").symlink_to(SHARED_MODEL / "tiny-sd.safetensors")
        yaml = (SHARED_MODEL / "tiny-sd.yaml").read_text(encoding="utf-8")
        yaml = yaml.replace("TINY_CLIP_DIR", str(SHARED_MODEL / "tiny-clip"))
        (checkpoints / "tiny-sd.yaml").write_text(yaml, encoding="utf-8")
        _save_ldm_vae(SHARED_MODEL / "tiny-sd.safetensors", root / "VAE" / "tiny-sd-vae.safetensors")
    return root


@pytest.fixture(scope="session")
def worker(models_dir: Path) -> Iterator[LocalWorker]:
    with LocalWorker("plain", threads=2, extra_args=["--models-dir", str(models_dir)]) as started:
        yield started


@pytest.fixture(scope="session")
def twin() -> Iterator[LocalWorker]:
    """A second worker process with the same pinned thread count, and basic auth on."""
    with LocalWorker("auth", threads=2, extra_args=["--api-auth", f"{AUTH[0]}:{AUTH[1]}"]) as started:
        yield started


@pytest.fixture(scope="session")
def slow() -> Iterator[ThreadWorker]:
    """An emulated slow GPU: 60 images a minute at 64x64, 4 steps (one second each), served in a thread."""
    with ThreadWorker("slow", emulate_ipm=60) as started:
        yield started
