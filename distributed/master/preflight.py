"""Before a webui job: what each worker needs to render like the master, and who must sit this job out.

One short round of calls per worker, all at once, each with its timeout: its checkpoint list (matched to the
master's by hash or name), its LoRAs and VAEs when the job names any, and its always-on scripts. A worker lacking
the checkpoint, a LoRA or the VAE is left out of this job with the reason, and shown as "model missing".
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from distributed.engine.fleet import FleetMember, WorkerState
from distributed.errors import WorkerError, WorkerModelMissing
from distributed.master.payload import (
    OWN_SCRIPT,
    Checkpoint,
    ScriptArgs,
    alwayson_names,
    forwarded_scripts,
    match_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Needs:
    kind: str
    checkpoint: Checkpoint | None = None
    vae: str | None = None  # a VAE file name, or None to leave the worker's own setting
    loras: frozenset[str] = frozenset()
    scripts: tuple[ScriptArgs, ...] = ()


@dataclass
class WorkerPrep:
    request: dict[str, Any] = field(default_factory=dict)  # merged into this worker's chunk requests
    excluded: str | None = None
    not_forwarded: list[str] = field(default_factory=list)


def _names(entries: list[dict[str, Any]], *keys: str) -> set[str]:
    return {str(entry[key]) for entry in entries for key in keys if entry.get(key)}


def prepare_worker(member: FleetMember, needs: Needs) -> WorkerPrep:
    client = member.client
    overrides: dict[str, Any] = {}
    if needs.checkpoint is not None:
        title = match_checkpoint(client.sd_models(), needs.checkpoint)
        if title is None:
            raise WorkerModelMissing(member.name, f"has no checkpoint matching {needs.checkpoint.title}")
        overrides["sd_model_checkpoint"] = title
    if needs.vae:
        vaes = _names(client.listing("/sdapi/v1/sd-vae"), "model_name", "filename")
        if not any(needs.vae == v or v.endswith(("/" + needs.vae, "\\" + needs.vae)) for v in vaes):
            raise WorkerModelMissing(member.name, f"has no VAE {needs.vae}")
        overrides["sd_vae"] = needs.vae
    if needs.loras:
        have = _names(client.listing("/sdapi/v1/loras"), "name", "alias")
        missing = sorted(needs.loras - have)
        if missing:
            raise WorkerModelMissing(member.name, f"has no LoRA {', '.join(missing)}")
    worker_scripts = alwayson_names(client.script_info(), needs.kind)
    scripts, skipped = forwarded_scripts(needs.scripts, worker_scripts)
    if OWN_SCRIPT in worker_scripts:
        scripts[OWN_SCRIPT] = {"args": [False]}  # a worker with this extension renders, it does not distribute
    request: dict[str, Any] = {"alwayson_scripts": scripts}
    if overrides:
        request["override_settings"] = overrides
    return WorkerPrep(request, None, skipped)


def prepare(members: list[FleetMember], needs: Needs, timeout_s: float) -> dict[str, WorkerPrep]:
    """Every enabled member's preparation; a failure or no answer in time leaves that worker out, with why.

    Workers that failed in an earlier job are asked too: answering here re-admits them.
    """
    candidates = [m for m in members if m.state != WorkerState.DISABLED]
    if not candidates:
        return {}
    preps: dict[str, WorkerPrep] = {}
    pool = ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix="distributed-prep")
    try:
        futures = {pool.submit(prepare_worker, m, needs): m for m in candidates}
        done, _ = wait(futures, timeout=timeout_s)
        for future, member in futures.items():
            if future not in done:
                member.set_state(WorkerState.OFFLINE, "no answer while preparing the job")
                preps[member.name] = WorkerPrep(excluded=f"{member.name}: no answer within {timeout_s:.0f} s")
                continue
            try:
                preps[member.name] = future.result()
                if not member.state.usable:
                    member.set_state(WorkerState.ONLINE, "answered while preparing a job")
            except WorkerError as error:
                member.record_error(error)
                preps[member.name] = WorkerPrep(excluded=str(error))
                logger.warning("%s sits this job out: %s", member.name, error)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return preps
