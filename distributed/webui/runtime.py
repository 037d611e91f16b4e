"""The extension's long-lived state: flags, the fleet manager, built on first use (never at import time).

Script instances are rebuilt on every UI reload, and the webui re-runs scripts/distributed.py; this module is
imported once, so the manager (and what workers taught it) survives reloads until `close_runtime()`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.engine.config import FleetConfig, parse_api_auth, parse_remotes
from distributed.errors import ConfigError
from distributed.master.manager import FleetManager

logger = logging.getLogger("distributed")
EXTENSION_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class OwnApi:
    """This webui's own API, for benchmarking the master from the tab (None and why when it has none)."""

    url: str | None
    auth: tuple[str, str] | None = None
    missing: str | None = None


def own_api(cmd_opts: Any) -> OwnApi:
    if not (getattr(cmd_opts, "api", False) or getattr(cmd_opts, "nowebui", False)):
        return OwnApi(None, missing="this webui was started without --api, so the tab cannot ask it to render")
    port = getattr(cmd_opts, "port", None) or (7861 if getattr(cmd_opts, "nowebui", False) else 7860)
    scheme = "https" if getattr(cmd_opts, "tls_keyfile", None) else "http"
    try:
        pairs = parse_api_auth(getattr(cmd_opts, "api_auth", None) or "")
    except ValueError as error:
        return OwnApi(None, missing=str(error))
    auth = next(iter(pairs.items()), None)
    return OwnApi(f"{scheme}://127.0.0.1:{port}", auth)


@dataclass(frozen=True)
class Flags:
    remotes: str | None = None
    skip_verify: bool = False
    autosave: bool = False
    debug: bool = False
    config: Path = EXTENSION_ROOT / "workers.json"
    api_auth: str | None = None


def flags_from(cmd_opts: Any) -> Flags:
    """The --distributed-* flags (see preload.py) off the webui's parsed command line."""
    config = getattr(cmd_opts, "distributed_config", None)
    return Flags(
        remotes=getattr(cmd_opts, "distributed_remotes", None),
        skip_verify=bool(getattr(cmd_opts, "distributed_skip_verify_remotes", False)),
        autosave=bool(getattr(cmd_opts, "distributed_remotes_autosave", False)),
        debug=bool(getattr(cmd_opts, "distributed_debug", False)),
        config=Path(config).expanduser() if config else Flags.config,
        api_auth=getattr(cmd_opts, "api_auth", None),
    )


class Runtime:
    def __init__(self, flags: Flags) -> None:
        self.flags = flags
        self.error: str | None = None  # a broken workers.json or flag: shown in the tab, the webui still starts
        logging.getLogger("distributed").setLevel(logging.DEBUG if flags.debug else logging.INFO)
        try:
            remotes = parse_remotes(flags.remotes) if flags.remotes else []
        except ConfigError as error:
            self.error, remotes = str(error), []
        try:
            self.manager = FleetManager(flags.config, remotes, verify_tls_default=not flags.skip_verify)
        except ConfigError as error:
            self.error = str(error)
            logger.error("distributed: %s; starting with no workers from the file", error)
            # saving still refuses to replace the broken file: save_config parses what is on disk first
            self.manager = FleetManager(
                flags.config, remotes, verify_tls_default=not flags.skip_verify, config=FleetConfig()
            )


@functools.lru_cache(maxsize=1)
def runtime() -> Runtime:
    from modules import shared  # the adapter's one read of the webui's command line

    return Runtime(flags_from(shared.cmd_opts))


def close_runtime() -> None:
    if runtime.cache_info().currsize:
        runtime().manager.close()
    runtime.cache_clear()
