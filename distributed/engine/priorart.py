"""Importing papuSpartan/stable-diffusion-webui-distributed's config, so its users switch in one step.

Two layouts exist: `distributed-config.json` ({"workers": [{"LABEL": {...}}], "benchmark_payload": ..., ...}) and the
older `workers.json` ({"LABEL": {...}, "benchmark_payload": ...}). Each worker entry has address, port, tls, user,
password, avg_ipm, pixel_cap, master and state (5 = disabled). The master entry is dropped (ours is implicit).
"""

from __future__ import annotations

import datetime
from typing import Any

from distributed.engine.config import FleetConfig, check_url, parse_config
from distributed.errors import ConfigError

DISABLED_STATE = 5
REFERENCE_UNITS = 512 * 512 / 1e6 * 20  # megapixel-steps of one 512x512, 20-step image
_PRIOR_KEYS = {"address", "port", "avg_ipm", "master", "tls", "state", "pixel_cap", "eta_percent_error"}


def _worker_entries(data: Any) -> list[tuple[str, dict[str, Any]]] | None:
    if not isinstance(data, dict) or "version" in data:
        return None
    if isinstance(data.get("workers"), list):
        items = data["workers"]
        if all(isinstance(item, dict) and len(item) == 1 for item in items):
            entries = [(str(label), fields) for item in items for label, fields in item.items()]
            if all(isinstance(fields, dict) for _, fields in entries):
                return entries
        return None
    entries = [(str(k), v) for k, v in data.items() if k != "benchmark_payload" and isinstance(v, dict)]
    if entries and all(_PRIOR_KEYS & set(fields) for _, fields in entries):
        return entries
    return None


def looks_like_prior_art(data: Any) -> bool:
    entries = _worker_entries(data)
    # an empty worker list is ours too (a fleet with its workers removed): only real entries tell the layouts apart
    return bool(entries) and all(_PRIOR_KEYS & set(fields) for _, fields in entries or [])


def _host(address: str) -> tuple[str, bool]:
    """v2.3.0 saves the address as typed, scheme and trailing slash included (it strips them only in memory)."""
    tls = address.lower().startswith("https://")
    for prefix in ("http://", "https://"):
        if address.lower().startswith(prefix):
            address = address[len(prefix) :]
    return address.strip().rstrip("/"), tls


def _credential(value: Any) -> str | None:
    """v2.3.0 stores a missing user or password as the string "None" (it casts with str())."""
    text = "" if value is None else str(value)
    return None if text in ("", "None") else text


def _safe_name(label: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in label).strip("-._")[:60] or "worker"
    if base.lower() == "master":
        base = "master-remote"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def import_prior_art(data: Any, source: str) -> tuple[FleetConfig, list[str]]:
    """Convert; returns the new config and notes for the user (what changed and why)."""
    entries = _worker_entries(data)
    if entries is None:
        raise ConfigError("is not a stable-diffusion-webui-distributed config", path=source)
    notes: list[str] = []
    workers: list[dict[str, Any]] = []
    taken: set[str] = set()
    for label, fields in entries:
        if fields.get("master"):
            notes.append(f"{label}: the master entry is not needed (this webui is always the master)")
            continue
        name = _safe_name(label, taken)
        taken.add(name)
        host, tls = _host(str(fields.get("address") or "localhost"))
        scheme = "https" if tls or fields.get("tls") else "http"
        url = f"{scheme}://{host}:{int(fields.get('port') or (443 if scheme == 'https' else 7860))}"
        try:
            check_url(url)
        except ValueError as exc:
            raise ConfigError(str(exc), path=source, worker=label, field="address") from exc
        worker: dict[str, Any] = {"name": name, "url": url, "enabled": fields.get("state") != DISABLED_STATE}
        user, password = _credential(fields.get("user")), _credential(fields.get("password"))
        if user:
            worker["auth"] = {"user": user, "password": password or ""}
            notes.append(f"{name}: password kept in the new file (mode 0600); prefer auth.password_env")
        pixel_cap = fields.get("pixel_cap")
        if isinstance(pixel_cap, int) and pixel_cap > 0:
            worker["caps"] = {"max_pixels": max(pixel_cap, 64 * 64)}
        ipm = fields.get("avg_ipm")
        if isinstance(ipm, (int, float)) and ipm > 0:
            # a prior until our own benchmark runs: no overhead known, the whole time is per-image
            per_image = 60.0 / float(ipm)
            worker["cost_model"] = {"overhead_s": 0.0, "seconds_per_unit": per_image / REFERENCE_UNITS, "samples": 0}
            worker["benchmark"] = {
                "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "model": None,
                "ipm": float(ipm),
            }
            notes.append(f"{name}: speed {ipm:.1f} ipm imported; run a benchmark to fit overhead and slope")
        if label != name:
            notes.append(f"{label}: renamed to {name}")
        workers.append(worker)
    if isinstance(data, dict) and data.get("complement_production", True):
        notes.append("complementary images are off: turn on options.extra_images to make extra images for idle time")
    return parse_config({"version": 1, "workers": workers}, source), notes
