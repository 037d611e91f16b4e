"""One Generate press on the master: the webui's own loop is one member of the job's fleet.

`process` (seeds fixed) builds the job and hands the master its first chunk at once, from what is known (no network
call); the dispatcher runs the fleet's part in a background thread, with each worker's preflight beside the
master's first batch. The webui's loop renders the master's chunks: before every batch, the seed, prompt and hires
lists hold exactly that chunk's values at the slice the loop reads (`all_*[n*b:(n+1)*b]`), so the webui's own code
builds the RNG, the conditioning and the samples for it. After each batch, `postprocess_batch_list` keeps the
master's images aside and asks the dispatcher for the next chunk (re-queued or unstarted images when the master
finishes them first), waiting while the fleet works. When the job is over it hands every image to the loop in index
order with its prompt and seed, so the webui saves them, writes their infotexts and builds the grid as usual. State
lives on this object, which lives on the job's processing object: nothing crosses from one job to another.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from distributed.engine.costmodel import prior
from distributed.engine.dispatcher import Job, ProgressEvent
from distributed.engine.jobs import JobResult, JobSpec
from distributed.engine.lane import MASTER, Ask, LocalLane
from distributed.engine.scheduler import Chunk
from distributed.errors import JobError
from distributed.images import decode_image_bytes
from distributed.master.manager import FleetManager
from distributed.master.payload import lora_names
from distributed.master.preflight import Needs, prepare_worker
from distributed.webui.fields import LISTS, build_spec, read_checkpoint, script_args, to_tensor

logger = logging.getLogger("distributed")

WAIT_TICK_S = 0.25  # how often the wait refreshes the webui's progress and reads its Interrupt/Skip flags
INTERRUPT_WAIT_S = 5.0  # an interrupted job hands back what arrived within its grace; this bounds the wait for it


@dataclass
class Choice:
    """The accordion's values for one job, the saved options already applied where it said "as saved"."""

    enabled: bool
    workers: list[str]
    orchestrator_only: bool
    extra_images: bool


@dataclass
class WebuiJob:
    manager: FleetManager
    spec: JobSpec
    lane: LocalLane
    lists: dict[str, list[Any]]  # the job's full all_* lists
    batch_size: int  # the user's
    n_iter: int
    job: Job
    current: Chunk | None = None  # what the master renders in this iteration; None: a placeholder pass
    own: dict[int, Any] = field(default_factory=dict)  # the master's images (CHW tensors) by index
    result: JobResult | None = None
    error: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    collected: bool = False
    workers_by_position: list[str] = field(default_factory=list)  # the merged batch's image -> worker name
    indices_by_position: list[int] = field(default_factory=list)  # the merged batch's image -> image index
    progress: ProgressEvent | None = None
    full_init: dict[str, Any] = field(default_factory=dict)  # img2img tensors made for the user's batch size

    # -- the fleet's part, in a background thread ----------------------------------------------------------------
    def run_remote(self) -> None:
        self.manager.job_started(self.spec.images)
        thread = threading.Thread(target=self._run, name="distributed-webui-job", daemon=True)
        thread.start()

    def _run(self) -> None:
        try:
            self.result = self.job.run()
        except JobError as error:
            self.error, self.result = str(error), error.partial
            logger.error("distributed: %s", error)
        except Exception as error:  # the job boundary: record it, the master renders what is missing
            self.error = f"the fleet's part failed: {error}"
            logger.exception("distributed: the fleet's part of the job failed")
        finally:
            self.lane.finish()
            self.manager.job_finished(self.result, self.spec.workload, self.lane.cost)
            self.finished.set()

    def _on_event(self, event: ProgressEvent) -> None:
        self.progress = event
        self.manager.job_progress(event.done, event.worker, event.worker_done, event.step, event.steps)

    # -- the webui's loop ----------------------------------------------------------------------------------------
    def point_loop_at(self, p: Any, iteration: int, chunk: Chunk | None) -> None:
        """Make the loop's slice for `iteration` hold `chunk` (or one placeholder image of index 0)."""
        self.current = chunk
        indices = list(chunk.indices) if chunk is not None else [0]
        before = iteration * self.batch_size
        for name, values in self.lists.items():
            picked = [values[i] for i in indices]
            setattr(p, name, [picked[0]] * before + picked)
        if chunk is None:
            p.sample = _placeholder_sampler(int(p.width), int(p.height))
        else:
            vars(p).pop("sample", None)  # the class's own sampler

    def fit_batch_tensors(self, p: Any) -> None:
        """img2img: the init latent (and inpainting conditioning) were made for the user's batch size."""
        count = len(p.seeds or [])
        for name in ("init_latent", "image_conditioning"):
            tensor = getattr(p, name, None)
            if tensor is None or not hasattr(tensor, "shape") or not len(tensor.shape):
                continue
            full = self.full_init.setdefault(name, tensor)
            if full.shape[0] == self.batch_size and count:
                setattr(p, name, full[:count])

    def after_batch(self, p: Any, images: list[Any], iteration: int, state: Any) -> list[Any]:
        """Keep the master's images aside; then either point the loop at its next chunk (and return nothing to the
        loop for now) or, the job over, return every image in index order. After Interrupt the loop stops at its
        next iteration, so this batch is the last chance to hand it what was made: the job is interrupted, and
        what the master and the fleet made so far is returned now."""
        if self.current is not None:
            for index, image in zip(self.current.indices, images, strict=False):
                self.own[index] = image
            self.lane.done()
        while True:
            if state.interrupted or getattr(state, "stopping_generation", False):
                self.job.interrupt()
                if not self.finished.wait(timeout=INTERRUPT_WAIT_S):
                    logger.warning("distributed: the interrupted job did not end within %.0f s", INTERRUPT_WAIT_S)
                return self.merge(p)
            answer = self.lane.ask(WAIT_TICK_S)
            if isinstance(answer, Chunk):
                self.point_loop_at(p, iteration + 1, answer)
                self._show_progress(state)
                return []
            if answer is Ask.FINISHED:
                self.finished.wait(timeout=2 * WAIT_TICK_S)  # the job thread records the result right after
                return self.merge(p)
            self._show_progress(state)
            if state.skipped:
                state.skipped = False
                self.job.skip()

    def _show_progress(self, state: Any) -> None:
        event = self.progress
        if event is not None:
            state.sampling_steps = max(1, event.total)
            state.sampling_step = event.done
            state.textinfo = f"Distributed: {event.done}/{event.total} images"

    def merge(self, p: Any) -> list[Any]:
        """Every image by index, the master's and the fleet's, with prompts and seeds aligned."""
        self.collected = True
        remote = {image.index: image for image in (self.result.images if self.result is not None else [])}
        images, indices, workers = [], [], []
        for index in sorted({*self.own, *remote}):
            if index in self.own:
                images.append(self.own[index])
                workers.append(MASTER)
            else:
                images.append(to_tensor(decode_image_bytes(remote[index].png)))
                workers.append(remote[index].worker)
            indices.append(index)
        self._restore_lists(p, indices)
        self.workers_by_position, self.indices_by_position = workers, indices
        for line in self.problems():
            p.comment(f"Distributed: {line}")
        return images

    def _restore_lists(self, p: Any, indices: list[int]) -> None:
        for name, values in self.lists.items():
            extended = list(values)
            for index in range(len(values), max(indices, default=-1) + 1):  # opt-in extras beyond N
                seed, subseed = self.spec.seeds_for(index)
                extended.append({"all_seeds": seed, "all_subseeds": subseed}.get(name, values[-1]))
            setattr(p, name, extended)
        p.prompts = [p.all_prompts[i] for i in indices]
        p.negative_prompts = [p.all_negative_prompts[i] for i in indices]
        p.seeds = [p.all_seeds[i] for i in indices]
        p.subseeds = [p.all_subseeds[i] for i in indices]
        p.batch_size, p.n_iter = self.batch_size, self.n_iter
        vars(p).pop("sample", None)
        for name, tensor in self.full_init.items():
            setattr(p, name, tensor)

    # -- what the user is told -----------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        lines = [
            f"{name} sat this job out: {why}" for name, why in (self.result.excluded if self.result else {}).items()
        ]
        lines += list(self.result.failures) if self.result is not None else []
        if self.error:
            lines.append(self.error)
        if self.result is not None and self.result.interrupted:
            lines.append("interrupted")
        return list(dict.fromkeys(lines))

    def report(self) -> dict[str, Any]:
        """The job's part of the API's `info`: images per worker, failed chunks, and what went wrong."""
        stats = self.result.workers if self.result is not None else {}
        return {
            "workers": {name: {"images": s.images, "failed_chunks": s.failed_chunks} for name, s in stats.items()},
            "failed": self.problems(),
        }


def start(p: Any, choice: Choice, manager: FleetManager, shared: Any) -> WebuiJob | None:
    """Build the job and start the fleet's part; None when this job stays on the master alone."""
    kind = "img2img" if hasattr(p, "init_images") else "txt2img"
    members = [m for m in manager.fleet if m.config.enabled and (not choice.workers or m.name in choice.workers)]
    if not members:
        return None
    spec = build_spec(p, kind, shared.opts, choice.extra_images, manager.fleet.config.options.extra_slack)
    expected = [spec.seeds_for(i) for i in range(spec.images)]
    if expected != list(zip(p.all_seeds, p.all_subseeds, strict=False)):
        # another script set its own seed lists: a worker is sent seed + k, so these images stay on the master
        logger.warning("distributed: this job's seeds do not follow seed + k; it runs on this machine only")
        return None
    if kind == "img2img" and len(getattr(p, "init_images", None) or []) > 1:
        logger.warning("distributed: img2img with several init images runs on this machine only")
        return None
    needs = Needs(
        kind=kind,
        checkpoint=read_checkpoint(getattr(shared, "sd_model", None)),
        vae=getattr(p, "sd_vae_name", None) or None,
        loras=frozenset(lora_names(*(spec.prompts or []), *(spec.negative_prompts or []))),
        scripts=script_args(p),
    )
    known = [m.cost for m in members if m.cost is not None and m.calibrated]
    master_cost = manager.master_cost or prior(known, spec.workload)
    lane = LocalLane(master_cost, int(p.batch_size), reserve=choice.orchestrator_only)
    job = Job(manager.fleet, spec, workers=[m.name for m in members], lane=lane, admit=_admit(needs))
    plan = job.plan_now()
    if plan.shares.get(MASTER, 0) >= spec.images:
        return None  # the plan keeps everything on the master: no preflight, no network
    lists = {name: list(getattr(p, name)) for name in LISTS if isinstance(getattr(p, name, None), list)}
    webui_job = WebuiJob(manager, spec, lane, lists, int(p.batch_size), int(p.n_iter), job)
    job.on_event = webui_job._on_event
    first = job.first_local_chunk(plan)
    p.n_iter = spec.images + 1  # an upper bound: each pass renders at least one image, plus a placeholder pass
    webui_job.point_loop_at(p, 0, first)
    webui_job.run_remote()
    shared.state.job_count = max(1, -(-plan.shares.get(MASTER, 0) // max(1, int(webui_job.batch_size)))) + 1
    return webui_job


def _admit(needs: Needs) -> Any:
    def admit(member: Any) -> dict[str, Any]:
        prep = prepare_worker(member, needs)
        if prep.not_forwarded:
            logger.debug(
                "%s lacks the scripts %s; they run on the master's images only", member.name, prep.not_forwarded
            )
        return prep.request

    return admit


class _Decoded(list):  # type: ignore[type-arg]
    already_decoded = True  # as the webui's processing.DecodedSamples: the loop skips the VAE for these


def _placeholder_sampler(width: int, height: int) -> Any:
    """The master's sampler for a pass in which it renders nothing: one blank, already decoded image, dropped.

    The webui's loop stacks what the sampler returns, so it must hold at least one image.
    """

    def sample(*args: Any, **kwargs: Any) -> Any:
        import torch

        return _Decoded([torch.zeros((3, height, width))])

    return sample
