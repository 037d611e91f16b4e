"""workers.json: the fleet's configuration, validated on load and saved atomically.

Loading names the file, the worker and the field on any error and rejects unknown keys. Saving writes a temp file,
fsyncs it and renames it over the old one, keeps the last good file as `.bak`, refuses to overwrite a file that
does not parse (that would lose what the user wrote), and uses mode 0600 whenever the file holds a password.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pydantic
from pydantic import Field, SecretStr

from distributed.compat import StrictModel, dump, error_locations, validate
from distributed.errors import ConfigError

CONFIG_VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RESERVED_NAMES = {"master"}
_save_lock = threading.Lock()


class Auth(StrictModel):
    user: str = Field(min_length=1)
    password: Optional[SecretStr] = None
    password_env: Optional[str] = None


class Caps(StrictModel):
    max_batch: Optional[int] = Field(None, ge=1, le=1024)
    max_pixels: Optional[int] = Field(None, ge=64 * 64)


class CostModelState(StrictModel):
    """A fitted cost model (engine/costmodel.py): seconds = overhead_s + step_overhead_s x steps + images x
    (decode_s_per_mp x MP + steps x (seconds_per_unit x MP + attention_s_per_mp2 x MP^2)), MP = megapixels.
    The last three terms came later: a file without them loads as megapixel-steps plus an overhead, as it was."""

    overhead_s: float = Field(ge=0, le=3600)
    seconds_per_unit: float = Field(gt=0, le=3600)
    step_overhead_s: float = Field(0.0, ge=0, le=3600)  # per request per sampling step, whatever the batch size
    decode_s_per_mp: float = Field(0.0, ge=0, le=3600)  # per image per megapixel, once (VAE decode, PNG)
    attention_s_per_mp2: float = Field(0.0, ge=0, le=3600)  # per image per megapixel squared per step
    samples: int = Field(0, ge=0)
    error: Optional[float] = Field(None, ge=0)
    measured_at: Optional[str] = Field(None, max_length=64)  # the last workload it learned from, "WxH, S steps"


class BenchmarkRecord(StrictModel):
    when: str
    model: Optional[str] = None
    ipm: float = Field(ge=0)  # images per minute at 512x512, 20 steps
    seconds: float = Field(0, ge=0)  # how long the benchmark took


class WorkerConfig(StrictModel):
    name: str
    url: str
    enabled: bool = True
    auth: Optional[Auth] = None
    verify_tls: Optional[bool] = None  # None: follow the global setting (on unless --distributed-skip-verify-remotes)
    caps: Caps = Field(default_factory=Caps)  # type: ignore[arg-type]
    cost_model: Optional[CostModelState] = None
    benchmark: Optional[BenchmarkRecord] = None


class Timeouts(StrictModel):
    connect_s: float = Field(3.0, gt=0, le=120)
    probe_s: float = Field(3.0, gt=0, le=120)
    chunk_min_s: float = Field(20.0, gt=0, le=36000)  # the shortest deadline any chunk gets
    chunk_factor: float = Field(3.0, ge=1, le=100)  # deadline = chunk_min_s + factor x (predicted + wait)
    no_worker_s: float = Field(30.0, ge=0, le=3600)  # how long pending images wait for an offline worker to return


class FleetOptions(StrictModel):
    timeouts: Timeouts = Field(default_factory=Timeouts)  # type: ignore[arg-type]
    extra_images: bool = False  # opt-in: fill idle time with images beyond N
    extra_slack: float = Field(0.1, ge=0, le=1)  # extras only while the job ends within (1 + slack) x plan
    orchestrator_only: bool = False


class FleetConfig(StrictModel):
    version: int = CONFIG_VERSION
    workers: list[WorkerConfig] = Field(default_factory=list)
    options: FleetOptions = Field(default_factory=FleetOptions)  # type: ignore[arg-type]
    # learned speeds of fleet members not listed under workers: the webui's master ("master") and workers given
    # with --distributed-remotes, so the first job after a restart plans with them
    learned: dict[str, CostModelState] = Field(default_factory=dict)

    def worker(self, name: str) -> WorkerConfig:
        for worker in self.workers:
            if worker.name == name:
                return worker
        raise ConfigError("no such worker", worker=name)

    @property
    def has_secret(self) -> bool:
        return any(w.auth is not None and w.auth.password is not None for w in self.workers)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{url!r} has an invalid port") from exc
    if parts.username or parts.password:
        raise ValueError("put credentials in the worker's auth, not in the URL")
    return url.rstrip("/")


def _semantic_checks(config: FleetConfig, path: str | None) -> None:
    if config.version > CONFIG_VERSION:
        raise ConfigError(
            f"version {config.version} was written by a newer release; this one reads version {CONFIG_VERSION}",
            path=path,
            field="version",
        )
    seen: set[str] = set()
    for worker in config.workers:
        if not NAME_RE.match(worker.name) or worker.name in RESERVED_NAMES:
            raise ConfigError(
                "names are 1-64 letters, digits, '.', '_' or '-' (and not 'master')",
                path=path,
                worker=worker.name,
                field="name",
            )
        if worker.name in seen:
            raise ConfigError("two workers share this name", path=path, worker=worker.name, field="name")
        seen.add(worker.name)
        try:
            check_url(worker.url)
        except ValueError as exc:
            raise ConfigError(str(exc), path=path, worker=worker.name, field="url") from exc
        auth = worker.auth
        if auth is not None and (auth.password is None) == (auth.password_env is None):
            raise ConfigError(
                "give exactly one of password and password_env", path=path, worker=worker.name, field="auth"
            )


def parse_config(data: Any, path: str | None = None) -> FleetConfig:
    """Validate already-decoded JSON; every error names the file, the worker and the field."""
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a JSON object", path=path)
    try:
        config = validate(FleetConfig, data)
    except pydantic.ValidationError as exc:
        location, message = error_locations(exc)[0]
        worker = None
        field_path = list(location)
        if len(field_path) >= 2 and field_path[0] == "workers" and isinstance(field_path[1], int):
            raw_workers = data.get("workers")
            index = field_path[1]
            raw = raw_workers[index] if isinstance(raw_workers, list) and index < len(raw_workers) else None
            worker = str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") else f"#{index + 1}"
            field_path = field_path[2:]
        field = ".".join(str(part) for part in field_path) or None
        raise ConfigError(message, path=path, worker=worker, field=field) from None
    _semantic_checks(config, path)
    return config


def load_config(path: Path) -> FleetConfig:
    """Read workers.json; a missing file is an empty fleet, anything unreadable is a ConfigError."""
    if not path.exists():
        return FleetConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read: {exc}", path=str(path)) from exc
    if not text.strip():
        raise ConfigError("is empty (delete it to start a new fleet)", path=str(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path=str(path)
        ) from None
    from distributed.engine.priorart import looks_like_prior_art

    if looks_like_prior_art(data):
        raise ConfigError(
            "is a stable-diffusion-webui-distributed (papuSpartan) config; convert it once with "
            f"`python -m distributed import-config {path} --config workers.json`",
            path=str(path),
        )
    return parse_config(data, str(path))


def config_to_json(config: FleetConfig) -> dict[str, Any]:
    """The file's content; passwords are written out (the file is 0600), nothing else ever shows them."""
    data = dump(config)
    for worker in data["workers"]:
        auth = worker.get("auth")
        if auth and isinstance(auth.get("password"), SecretStr):
            auth["password"] = auth["password"].get_secret_value()
        if auth:
            worker["auth"] = {k: v for k, v in auth.items() if v is not None}
    return data


def save_config(config: FleetConfig, path: Path, keep_backup: bool = True) -> None:
    """Atomically replace `path`; keeps `path.bak` (unless only learned speeds changed: the backup then stays the
    last version a person wrote); refuses to replace a file that does not parse."""
    _semantic_checks(config, str(path))
    text = json.dumps(config_to_json(config), indent=2) + "\n"
    mode = 0o600 if config.has_secret else 0o644
    with _save_lock:
        if path.exists():
            try:
                load_config(path)
            except ConfigError as exc:
                raise ConfigError(
                    f"not saved: the file on disk does not parse and would be lost ({exc}); fix or move it first",
                    path=str(path),
                ) from exc
        _atomic_write(path, text, mode, keep_backup=keep_backup)


def atomic_write_text(path: Path, text: str) -> None:
    """A file with no secret, replaced atomically (ConfigError naming it if that fails)."""
    _atomic_write(path, text, 0o644, keep_backup=False)


def _atomic_write(path: Path, text: str, mode: int, keep_backup: bool) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if keep_backup and path.exists():
            backup = path.with_name(path.name + ".bak")
            _copy_atomically(path, backup, os.stat(path).st_mode & 0o777)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            os.fchmod(handle, mode) if hasattr(os, "fchmod") else None
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_folder(folder)
    except OSError as exc:
        raise ConfigError(f"not saved ({exc.strerror or exc}); the previous file is unchanged", path=str(path)) from exc


def _copy_atomically(source: Path, target: Path, mode: int) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temp_name)
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def parse_remotes(value: str, flag: str = "--distributed-remotes") -> list[WorkerConfig]:
    """`NAME:HOST:PORT[,NAME:https://HOST:PORT,...]` into worker entries."""
    workers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition(":")
        if not sep or not rest or not NAME_RE.match(name):
            raise ConfigError(f"{item!r} is not NAME:HOST:PORT or NAME:URL", field=flag)
        if rest.startswith(("http://", "https://")):
            url = rest
        else:
            host, sep, port = rest.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{item!r} is not NAME:HOST:PORT or NAME:URL", field=flag)
            url = f"http://{host}:{port}"
        try:
            workers.append(validate(WorkerConfig, {"name": name, "url": check_url(url)}))
        except (ValueError, pydantic.ValidationError) as exc:
            raise ConfigError(f"{item!r}: {exc}", field=flag) from exc
    return workers


def merge_workers(config: FleetConfig, extra: list[WorkerConfig]) -> FleetConfig:
    """Add flag-given workers; one with the same name as a file entry replaces its URL only."""
    workers = list(config.workers)
    for added in extra:
        for index, existing in enumerate(workers):
            if existing.name == added.name:
                workers[index] = validate(WorkerConfig, {**dump(existing), "url": added.url})
                break
        else:
            workers.append(added)
    merged = validate(FleetConfig, {**dump(config), "workers": [dump(w) for w in workers]})
    _semantic_checks(merged, None)
    return merged


def parse_api_auth(value: str | None) -> dict[str, str]:
    """A1111's --api-auth: "user:pass[,user2:pass2]"."""
    credentials: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        user, sep, password = item.strip().partition(":")
        if not sep or not user:
            raise ValueError("--api-auth takes user:password[,user:password...]")
        credentials[user] = password
    return credentials
