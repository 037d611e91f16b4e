"""The always-visible "Distributed" script: the webui hooks, translated to the bridge and back."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

from modules import images, scripts, shared

from distributed.engine.lane import MASTER
from distributed.webui import bridge
from distributed.webui.runtime import runtime
from distributed.webui.ui import AS_SAVED, EXTRA_CHOICES, MASTER_CHOICES, accordion, choice_value

logger = logging.getLogger("distributed")
JOB_ATTRIBUTE = "distributed_job"  # the job's state lives on its processing object, nowhere else


class DistributedScript(scripts.Script):  # type: ignore[misc]
    sorting_priority = 1000  # Forge: run after other scripts have set prompts and seeds

    def title(self) -> str:
        return "Distributed"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return accordion(is_img2img, runtime().manager.enabled_names())

    def process(self, p: Any, enabled: bool = True, workers: Any = None, master: Any = AS_SAVED,
                extra: Any = AS_SAVED, *rest: Any) -> None:  # fmt: skip
        if not enabled:
            return
        manager = runtime().manager
        options = manager.fleet.config.options  # read per job: a change in the tab applies to the next one
        choice = bridge.Choice(
            True,
            list(workers or []),
            choice_value(master, options.orchestrator_only, MASTER_CHOICES[2]),
            choice_value(extra, options.extra_images, EXTRA_CHOICES[1]),
        )
        job = bridge.start(p, choice, manager, shared)
        if job is None:
            return
        setattr(p, JOB_ATTRIBUTE, job)
        p.extra_generation_params["Worker"] = _worker_label(job)
        logger.info("distributed: %d images; the master starts on %s", job.spec.images, job.current or "nothing")

    def before_process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job: bridge.WebuiJob | None = getattr(p, JOB_ATTRIBUTE, None)
        if job is None:
            return
        if job.collected:
            p.prompts = []  # every image is in: the webui's loop ends on an empty batch
            return
        job.fit_batch_tensors(p)

    def postprocess_batch_list(self, p: Any, pp: Any, *args: Any, **kwargs: Any) -> None:
        job: bridge.WebuiJob | None = getattr(p, JOB_ATTRIBUTE, None)
        if job is None or job.collected:
            return
        pp.images = job.after_batch(p, list(pp.images), int(kwargs.get("batch_number", 0)), shared.state)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        job: bridge.WebuiJob | None = getattr(p, JOB_ATTRIBUTE, None)
        if job is None:
            return
        if not job.collected:  # the local loop ended early (Interrupt)
            job.job.interrupt()
        _attach_report(processed, job)
        if runtime().flags.autosave and not p.save_samples():
            _save_remote(p, processed, job)


def _attach_report(processed: Any, job: bridge.WebuiJob) -> None:
    """The job's report in the API's `info` (as "distributed"), and a warning in the UI when a worker failed."""
    original = processed.js

    def js() -> str:
        data = json.loads(original())
        data["distributed"] = job.report()
        return json.dumps(data)

    processed.js = js
    problems = job.problems()
    if problems:
        warn("Distributed: " + "; ".join(problems))


def warn(text: str) -> None:
    """A gradio warning toast where a UI event is running (silently nothing for API calls)."""
    import gradio as gr

    logger.warning("%s", text)
    with warnings.catch_warnings():  # outside a UI event (API calls) gradio 3.41 and 4.40 fall back to warnings.warn
        warnings.simplefilter("ignore", UserWarning)
        gr.Warning(text)


def _worker_label(job: bridge.WebuiJob) -> Any:
    def label(index: int = 0, use_main_prompt: bool = False, **kwargs: Any) -> str | None:
        if use_main_prompt:
            return None  # the grid's infotext: made by the whole fleet
        names = job.workers_by_position
        return names[index] if index < len(names) else MASTER

    return label


def _save_remote(p: Any, processed: Any, job: bridge.WebuiJob) -> None:
    """--distributed-remotes-autosave: the fleet's images go into the master's outputs even when it saves none.

    Every image of the job is in the merged batch, in index order after the grid: the gallery's images, with the
    master's infotexts (so they name their worker) and the seeds and prompts of their indices.
    """
    names, indices = job.workers_by_position, job.indices_by_position
    pictures = processed.images[processed.index_of_first_image :]
    texts = processed.infotexts[processed.index_of_first_image :]
    for picture, text, worker, index in zip(pictures, texts, names, indices, strict=False):
        if worker == MASTER:
            continue
        images.save_image(
            picture,
            p.outpath_samples,
            "",
            p.all_seeds[index],
            p.all_prompts[index],
            shared.opts.samples_format,
            info=text,
            p=p,
        )
