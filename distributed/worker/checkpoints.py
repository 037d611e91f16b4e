"""Checkpoints a headless worker can render with: the built-in tiny model and a models folder in A1111's layout.

`<models-dir>/Stable-diffusion/` holds single-file checkpoints (.safetensors, .ckpt) and diffusers folders
(with a model_index.json); `<models-dir>/VAE/` holds VAEs. Titles, short hashes and aliases follow A1111
(`name.safetensors [0123456789]`), so a master can match a checkpoint by title, name or hash.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TINY = "tiny"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")


class ModelNotFoundError(LookupError):
    """No checkpoint or VAE answers to this name."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        shown = ", ".join(known[:20]) or "none"
        super().__init__(f"{kind} {name!r} not found on this worker; it has: {shown}")
        self.name = name


class CheckpointLoadError(RuntimeError):
    """A checkpoint that exists but cannot be loaded here (missing config, tokenizer, unknown layout)."""


@dataclass
class CheckpointInfo:
    name: str  # file name relative to the checkpoints folder, as A1111 shows it ("sub/model.safetensors")
    path: Path | None  # None for the built-in tiny model
    sha256: str | None = None
    aliases: set[str] = field(default_factory=set)

    @property
    def model_name(self) -> str:
        return self.name.rsplit(".", 1)[0] if self.path is not None and self.path.is_file() else self.name

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    def names(self) -> set[str]:
        found = {self.name, self.title, self.model_name, *self.aliases}
        if self.path is not None:
            found.add(str(self.path))
        if self.sha256:
            found |= {self.sha256, self.sha256[:10], self.sha256[:8]}
        return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CheckpointRegistry:
    """The checkpoints and VAEs this worker knows; rescanned on demand, never at import time."""

    def __init__(self, models_dir: Path | None, extra: list[Path] | None = None, tiny_sha256: str | None = None):
        self.models_dir = models_dir
        self.extra = [p.absolute() for p in extra or []]
        self.tiny = CheckpointInfo(TINY, None, tiny_sha256)
        self.checkpoints: list[CheckpointInfo] = []
        self.vaes: dict[str, Path] = {}
        self.rescan()

    def rescan(self) -> None:
        known = {c.path: c for c in self.checkpoints if c.path is not None}
        found: list[CheckpointInfo] = [self.tiny]
        folder = self.models_dir / "Stable-diffusion" if self.models_dir else None
        candidates: list[tuple[str, Path]] = []
        if folder is not None and folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if (path.is_file() and path.suffix in CHECKPOINT_SUFFIXES) or (
                    path.is_dir() and (path / "model_index.json").is_file()
                ):
                    candidates.append((path.relative_to(folder).as_posix(), path))
        for path in self.extra:
            if all(p != path for _, p in candidates):
                candidates.append((path.name, path))
        for name, path in candidates:
            found.append(known.get(path) or CheckpointInfo(name, path))
        self.checkpoints = found
        vae_folder = self.models_dir / "VAE" if self.models_dir else None
        self.vaes = {}
        if vae_folder is not None and vae_folder.is_dir():
            for path in sorted(vae_folder.rglob("*")):
                if path.is_file() and path.suffix in VAE_SUFFIXES:
                    self.vaes[path.relative_to(vae_folder).as_posix()] = path

    def find(self, name: str) -> CheckpointInfo:
        for info in self.checkpoints:
            if name in info.names():
                return info
        # A1111 also accepts a title whose hash part is stale or missing
        bare = name.split(" [", 1)[0]
        for info in self.checkpoints:
            if bare in (info.name, info.model_name):
                return info
        raise ModelNotFoundError("model", name, [c.title for c in self.checkpoints])

    def find_vae(self, name: str) -> Path:
        if name in self.vaes:
            return self.vaes[name]
        for key, path in self.vaes.items():
            if name in (path.name, path.stem, key.rsplit(".", 1)[0]):
                return path
        raise ModelNotFoundError("VAE", name, list(self.vaes))
