"""`python -m distributed train`: a trainer peer. It leases chunks from the coordinator, trains the UNet on them
(diffusers' noise-prediction loss; a LoRA through peft, or the whole UNet) and averages with the other peers through
hivemind.Optimizer (fp16 or 8-bit gradient compression); it joins late by loading the state from its peers, carries on
when peers leave, renews and reports its leases, and at the end writes a checkpoint folder the headless worker loads
(`worker --model DIR`) and, for a LoRA, its weights."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import multiprocessing
import os
import socket
import threading
from pathlib import Path
from typing import Any

import requests

logger = logging.getLogger(__name__)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections a LoRA adapts
EVAL_SAMPLES = 8


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", required=True, metavar="URL", help="the coordinator's address")
    parser.add_argument("--model", default="tiny", help="'tiny' (built in) or a diffusers folder")
    parser.add_argument("--lora-rank", type=int, default=4, help="train a LoRA of this rank (0: the whole UNet)")
    parser.add_argument("--target-batch-size", type=int, default=32, help="samples over all peers per epoch")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per local step")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--compression", default="fp16", choices=["fp16", "8bit", "none"], help="gradient codec")
    parser.add_argument("--epochs", type=int, default=20, help="stop after this many global epochs")
    parser.add_argument("--host", default="127.0.0.1", help="address this peer's DHT binds")
    parser.add_argument("--public-maddr", action="append", default=[], help="an address other peers should dial")
    parser.add_argument("--token-env", default=None, metavar="VAR", help="the coordinator's token is in this variable")
    parser.add_argument("--name", default=None, help="this peer's name (default: host name and process id)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, required=True, help="where the checkpoint and summary.json go")


class Coordinator:
    """The coordinator's HTTP API, every call with a timeout."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "POST" if body is not None else "GET"
        response = self.session.request(method, f"{self.url}{path}", json=body, timeout=(5, 60))
        if response.status_code == 409:
            raise LookupError(response.json().get("detail", "refused"))
        response.raise_for_status()
        return response.json()


def counting(inner: Any, sent: Any, elements: Any) -> Any:
    """A hivemind codec that counts what it serializes (shared counters: the averagers run in child processes)."""
    from hivemind.compression import CompressionBase

    class Counting(CompressionBase):  # type: ignore[misc]
        compression_type = inner.compression_type

        def compress(self, tensor: Any, info: Any, allow_inplace: bool = False) -> Any:
            message = inner.compress(tensor, info, allow_inplace)
            with sent.get_lock():
                sent.value += message.ByteSize()
            with elements.get_lock():
                elements.value += tensor.numel()
            return message

        def extract(self, message: Any) -> Any:
            return inner.extract(message)

        def estimate_compression_ratio(self, info: Any) -> float:
            return float(inner.estimate_compression_ratio(info))

    return Counting()


def codec(name: str) -> Any:
    from hivemind.compression import (
        Float16Compression,
        NoCompression,
        Quantile8BitQuantization,
        SizeAdaptiveCompression,
    )

    if name == "fp16":
        return Float16Compression()
    if name == "8bit":  # small tensors carry their codebook's weight: they stay fp16
        return SizeAdaptiveCompression(
            threshold=2**12, less=Float16Compression(), greater_equal=Quantile8BitQuantization()
        )
    return NoCompression()


def load_model(model: str) -> Any:
    from distributed.worker.components import Components
    from distributed.worker.tiny import build_tiny_components

    if model == "tiny":
        return build_tiny_components()
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    return Components(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))


def encode(components: Any, samples: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Latents and caption embeddings for a list of samples (no gradients: only the UNet trains)."""
    import numpy as np
    import torch
    from PIL import Image

    from distributed.worker.pipeline import encode_prompts

    with torch.no_grad():
        pixels = []
        for item in samples:
            image = Image.open(io.BytesIO(base64.b64decode(item["image"]))).convert("RGB").resize((64, 64))
            pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
        latents = components.vae.encode(torch.stack(pixels)).latent_dist.mode() * components.latent_scale
        context = encode_prompts(components, [item["caption"] for item in samples], 1)
    return latents, context


def noise_loss(components: Any, scheduler: Any, latents: Any, context: Any, generator: Any = None) -> Any:
    """diffusers' training loss: the UNet predicts the noise added at a random timestep."""
    import torch

    noise = torch.randn(latents.shape, generator=generator)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    noisy = scheduler.add_noise(latents, noise, steps)
    predicted = components.unet(noisy, steps, encoder_hidden_states=context).sample
    return torch.nn.functional.mse_loss(predicted, noise)


def evaluate(components: Any, scheduler: Any, samples: list[dict[str, Any]]) -> float:
    """A fixed evaluation loss: the same samples, noise and timesteps every time."""
    import torch

    latents, context = encode(components, samples)
    with torch.no_grad():
        return float(noise_loss(components, scheduler, latents, context, torch.Generator().manual_seed(1234)))


def export(components: Any, lora: bool, out: Path) -> Path:
    """A diffusers folder the headless worker loads; a LoRA is saved on its own and merged into the folder's UNet."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    unet = components.unet
    if lora:
        from peft.utils import get_peft_model_state_dict

        weights = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(weights, str(out / "lora.safetensors"))
        unet.fuse_lora()
        unet.unload_lora()
    folder = out / "checkpoint"
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=unet,
        scheduler=DDIMScheduler.from_config(components.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


class Renewer:
    """Renews the lease being trained on every third of the lease time, until told to stop."""

    def __init__(self, coordinator: Coordinator, every_s: float) -> None:
        self.coordinator = coordinator
        self.every_s = every_s
        self.lease_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-renewer")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            lease_id = self.lease_id
            if lease_id is None:
                continue
            try:
                self.coordinator.call("/v1/renew", {"lease_id": lease_id})
            except (LookupError, requests.RequestException) as error:
                logger.warning("could not renew lease %s: %s", lease_id, error)

    def stop(self) -> None:
        self._stop.set()


def run_train(args: argparse.Namespace) -> int:
    import hivemind
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    token = os.environ.get(args.token_env) if args.token_env else None
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    coordinator = Coordinator(args.coordinator, token)
    status = coordinator.call("/status")
    components = load_model(args.model)
    scheduler = DDPMScheduler.from_config(components.scheduler_config)
    lora = args.lora_rank > 0
    unet = components.unet
    if lora:
        unet.requires_grad_(False)
        config = LoraConfig(
            r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=TARGETS, init_lora_weights="gaussian"
        )
        torch.manual_seed(0)  # every peer starts from the same adapter
        unet.add_adapter(config)
    for module in (components.vae, components.text_encoder):
        module.requires_grad_(False)
    params = [p for p in unet.parameters() if p.requires_grad]
    eval_set = coordinator.call("/v1/eval", {"count": EVAL_SAMPLES})
    eval_first = evaluate(components, scheduler, eval_set)
    sent, elements = multiprocessing.Value("d", 0.0), multiprocessing.Value("d", 0.0)
    dht = hivemind.DHT(
        initial_peers=coordinator.call("/v1/dht")["initial_peers"],
        start=True,
        host_maddrs=[f"/ip4/{args.host}/tcp/0"],
        announce_maddrs=args.public_maddr or None,
        use_ipfs=False,
        auto_nat=False,
        nat_port_map=False,
        use_relay=False,
        use_auto_relay=False,
    )
    optimizer = hivemind.Optimizer(
        dht=dht,
        run_id="distributed-train",
        target_batch_size=args.target_batch_size,
        batch_size_per_step=args.batch_size,
        optimizer=lambda trainable: torch.optim.AdamW(trainable, lr=args.lr),
        params=params,
        matchmaking_time=1.0,
        averaging_timeout=10.0,
        grad_compression=counting(codec(args.compression), sent, elements),
        state_averaging_compression=codec(args.compression),
        load_state_compression=codec("none"),
        tracker_opts={"min_refresh_period": 0.1, "max_refresh_period": 1.0, "default_refresh_period": 0.3},
        averager_opts={"request_timeout": 0.5},
        verbose=False,
    )
    if status.get("samples"):  # others are training: start from where they are
        optimizer.load_state_from_peers()
        logger.info("%s joined at epoch %d", name, optimizer.local_epoch)
    renewer = Renewer(coordinator, max(1.0, float(status.get("lease_s") or 30.0) / 3))
    reports = refused = 0
    idle = threading.Event()
    try:
        while optimizer.local_epoch < args.epochs:
            given = coordinator.call("/v1/lease", {"peer": name})["lease"]
            if given is None:
                idle.wait(1.0)  # every chunk is held: one comes free when a lease ends or expires
                continue
            renewer.lease_id = given["id"]
            logger.info("epoch %d: training chunk %d (lease %s)", optimizer.local_epoch, given["chunk"], given["id"])
            samples = coordinator.call("/v1/data", {"lease_id": given["id"], "samples": given["samples"]})
            latents, context = encode(components, samples)
            losses = []
            for start in range(0, len(samples), args.batch_size):
                loss = noise_loss(
                    components,
                    scheduler,
                    latents[start : start + args.batch_size],
                    context[start : start + args.batch_size],
                )
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(float(loss))
            renewer.lease_id = None
            try:
                coordinator.call(
                    "/v1/report",
                    {"lease_id": given["id"], "samples": len(samples), "loss": sum(losses) / len(losses), "peer": name},
                )
                reports += 1
            except LookupError as error:  # the lease expired and went to another peer: not counted twice
                refused += 1
                logger.warning("report refused: %s", error)
        eval_last = evaluate(components, scheduler, eval_set)
        checkpoint = export(components, lora, args.out)
    finally:
        renewer.stop()
        optimizer.shutdown()
        dht.shutdown()
    rounds = max(1, optimizer.local_epoch)
    summary = {
        "peer": name,
        "epochs": optimizer.local_epoch,
        "eval_first": eval_first,
        "eval_last": eval_last,
        "reports": reports,
        "refused": refused,
        "compression": args.compression,
        "bytes_per_round": sent.value / rounds,
        "bytes_per_round_fp32": 4 * elements.value / rounds,
        "checkpoint": str(checkpoint),
        "lora": str(args.out / "lora.safetensors") if lora else None,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    logger.info("done: %s", summary)
    return 0
