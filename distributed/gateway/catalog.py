"""What the fleet offers: every worker's checkpoints, samplers, schedulers and LoRAs, merged, each entry naming the
workers that have it. Asked of every usable worker at once, each call with its client's timeout; a worker that does
not answer is left out of the listing (its state says why)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from distributed.engine.fleet import Fleet, FleetMember, WorkerState
from distributed.errors import WorkerError, WorkerHTTPError
from distributed.master.payload import Checkpoint, match_checkpoint

LISTINGS = {
    "sd-models": ("/sdapi/v1/sd-models", "model_name"),
    "samplers": ("/sdapi/v1/samplers", "name"),
    "schedulers": ("/sdapi/v1/schedulers", "name"),
    "loras": ("/sdapi/v1/loras", "name"),
    "sd-vae": ("/sdapi/v1/sd-vae", "model_name"),
    "upscalers": ("/sdapi/v1/upscalers", "name"),
}
WAIT_S = 15.0  # the longest a listing waits for all workers together


class ModelNotFound(LookupError):
    """No worker has what a request names: HTTP 404 with the message."""


class Catalog:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._pool = ThreadPoolExecutor(max_workers=max(2, 2 * len(fleet.members)), thread_name_prefix="catalog")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _ask(self, call: Callable[[FleetMember], Any]) -> dict[str, Any]:
        members = [m for m in self.fleet if m.state != WorkerState.DISABLED]
        futures = {self._pool.submit(call, m): m for m in members}
        done, _ = wait(futures, timeout=WAIT_S)
        answers: dict[str, Any] = {}
        for future in done:
            member = futures[future]
            try:
                answers[member.name] = future.result()
            except WorkerHTTPError:
                continue  # a listing this worker does not offer (an older webui)
            except WorkerError as error:
                member.record_error(error)
        return {m.name: answers[m.name] for m in members if m.name in answers}  # in the fleet's order

    def listing(self, kind: str) -> list[dict[str, Any]]:
        """One entry per distinct name, the first worker's entry with `workers`: every worker that has it."""
        path, key = LISTINGS[kind]
        merged: dict[str, dict[str, Any]] = {}
        for worker, entries in self._ask(lambda m: m.client.listing(path)).items():
            for entry in entries:
                name = str(entry.get(key) or entry.get("title") or entry.get("name") or "")
                if not name:
                    continue
                if name not in merged:
                    merged[name] = {**entry, "workers": []}
                merged[name]["workers"].append(worker)
        return list(merged.values())

    def options(self) -> dict[str, Any]:
        """The first answering worker's options (the fleet's defaults as a client sees them)."""
        for options in self._ask(lambda m: m.client.options()).values():
            if isinstance(options, dict):
                return dict(options)
        return {}

    def scripts(self) -> dict[str, list[str]]:
        """A1111's /scripts: the selectable scripts every answering worker has (clients probe it for extensions)."""
        answers = self._ask(lambda m: m.client.request("GET", "/sdapi/v1/scripts"))
        merged: dict[str, list[str]] = {"txt2img": [], "img2img": []}
        lists = [a for a in answers.values() if isinstance(a, dict)]
        for kind, names in merged.items():
            each = [set(a.get(kind) or []) for a in lists]
            names.extend(sorted(set.intersection(*each)) if each else [])
        return merged

    def workers_with_checkpoint(self, name: str) -> list[str]:
        """The workers that have this checkpoint (by title, name or hash); ModelNotFound names what each has."""
        want = Checkpoint(title=name, model_name=name.split(" [", maxsplit=1)[0].rsplit(".", 1)[0])
        models = self._ask(lambda m: m.client.sd_models())
        having = [worker for worker, entries in models.items() if match_checkpoint(entries, want)]
        if not having:
            offered = "; ".join(
                f"{worker} has {', '.join(str(e.get('title')) for e in entries) or 'none'}"
                for worker, entries in models.items()
            )
            raise ModelNotFound(f"no worker has checkpoint {name!r} ({offered or 'no worker answered'})")
        return having

    def check_loras(self, names: set[str]) -> None:
        """ModelNotFound when no worker has one of these LoRAs."""
        if not names:
            return
        entries = self.listing("loras")
        offered = {str(entry.get("name")) for entry in entries} | {str(entry.get("alias")) for entry in entries}
        missing = sorted(names - offered)
        if missing:
            raise ModelNotFound(f"no worker has LoRA {', '.join(missing)}")
