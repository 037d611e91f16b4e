"""The always-visible "Distributed" script: the webui hooks, translated to the bridge and back."""

from __future__ import annotations

import logging
import time
from typing import Any

from modules import images, processing, scripts, shared

from distributed.split import MASTER
from distributed.webui import bridge
from distributed.webui.runtime import runtime
from distributed.webui.ui import accordion

logger = logging.getLogger("distributed")
JOB_ATTRIBUTE = "distributed_job"  # the job's state lives on its processing object, nowhere else


class DistributedScript(scripts.Script):  # type: ignore[misc]
    sorting_priority = 1000  # Forge: run after other scripts have set prompts and seeds

    def title(self) -> str:
        return "Distributed"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        manager = runtime().manager
        return accordion(is_img2img, manager.enabled_names(), manager.fleet.config.options)

    def process(self, p: Any, enabled: bool = False, workers: Any = None, orchestrator_only: bool = False,
                extra_images: bool = False, *rest: Any) -> None:  # fmt: skip
        if not enabled:
            return
        choice = bridge.Choice(bool(enabled), list(workers or []), bool(orchestrator_only), bool(extra_images))
        job = bridge.start(p, choice, runtime().manager, shared)
        if job is None:
            return
        setattr(p, JOB_ATTRIBUTE, job)
        p.extra_generation_params["Worker"] = _worker_label(job)
        logger.info(
            "distributed: %d images, master renders %d, the fleet %d",
            job.spec.images,
            job.share.count,
            job.spec.images - job.share.count,
        )

    def postprocess_batch_list(self, p: Any, pp: Any, *args: Any, **kwargs: Any) -> None:
        job: bridge.WebuiJob | None = getattr(p, JOB_ATTRIBUTE, None)
        batch_number = kwargs.get("batch_number", 0)
        if job is None or job.collected or batch_number != max(1, job.share.iterations) - 1:
            if job is not None and not job.collected:
                job.workers_by_position = [MASTER] * len(pp.images)
            return
        job.local_done_at = time.monotonic()
        job.wait(shared.state)
        job.collected = True
        missing = [] if shared.state.interrupted else bridge.missing_indices(job)
        fallback = bridge.render_missing(p, job, missing, processing.process_images_inner)
        pp.images = bridge.merge_batch(p, list(pp.images), job, fallback)
        if job.share.count:
            seconds = job.local_done_at - job.started_at
            job.manager.master_observed(job.share.count, job.spec.workload, seconds)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        job: bridge.WebuiJob | None = getattr(p, JOB_ATTRIBUTE, None)
        if job is None:
            return
        if not job.collected and job.job is not None:  # the local loop ended early (Interrupt)
            job.job.interrupt()
        if job.error is not None:
            processed.comments = f"{processed.comments}\nDistributed: {job.error}".strip()
        if runtime().flags.autosave and not p.save_samples():
            _save_remote(p, processed, job)


def _worker_label(job: bridge.WebuiJob) -> Any:
    def label(index: int = 0, **kwargs: Any) -> str | None:
        names = job.workers_by_position
        return names[index] if index < len(names) else MASTER

    return label


def _save_remote(p: Any, processed: Any, job: bridge.WebuiJob) -> None:
    """--distributed-remotes-autosave: the fleet's images go into the master's outputs even when it saves none.

    The fleet's images are in the last batch, after the master's own: the tail of the gallery, with the master's
    infotexts (so they name their worker) and the seeds and prompts the merge aligned with them.
    """
    names = job.workers_by_position
    if not names:
        return
    pictures = processed.images[-len(names) :]
    texts = processed.infotexts[-len(names) :]
    for position, (picture, text, worker) in enumerate(zip(pictures, texts, names, strict=False)):
        if worker == MASTER:
            continue
        images.save_image(
            picture,
            p.outpath_samples,
            "",
            p.seeds[position],
            p.prompts[position],
            shared.opts.samples_format,
            info=text,
            p=p,
        )
