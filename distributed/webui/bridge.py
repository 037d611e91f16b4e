"""One Generate press on the master, split between the webui's own loop and the fleet.

`process` (seeds fixed) plans the job: the master keeps images 0..k-1 and renders them in its normal loop with a
smaller batch; the rest go to the workers at once, in a background thread running the core dispatcher. On the
master's last batch, `postprocess_batch_list` waits for the fleet (progress bar, Interrupt and Skip included),
renders anything the fleet could not deliver itself, and appends every image in index order with its prompt and
seed, so the webui's own code saves them, writes their infotexts and builds the grid. State lives on this object,
which lives on the job's processing object: nothing crosses from one job to another.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from distributed.costmodel import Workload, prior
from distributed.dispatcher import Job, ProgressEvent
from distributed.errors import JobError
from distributed.images import decode_image_bytes
from distributed.jobs import ImageResult, JobResult, JobSpec
from distributed.manager import FleetManager
from distributed.payload import Checkpoint, ScriptArgs, allowed_fields, build_payload, encode_image, lora_names
from distributed.preflight import Needs, prepare
from distributed.scheduler import Slot
from distributed.split import MASTER, LocalShare, local_share

logger = logging.getLogger("distributed")

WAIT_TICK_S = 0.25  # how often the wait refreshes the webui's progress and reads its Interrupt/Skip flags
PREFLIGHT_S = 8.0
CARRIED_OPTIONS = ("CLIP_stop_at_last_layers", "eta_noise_seed_delta", "randn_source")  # change the picture
LISTS = (
    "all_prompts",
    "all_negative_prompts",
    "all_seeds",
    "all_subseeds",
    "all_hr_prompts",
    "all_hr_negative_prompts",
)


@dataclass
class Choice:
    """The accordion's values for one job."""

    enabled: bool
    workers: list[str]
    orchestrator_only: bool
    extra_images: bool


@dataclass
class _Original:
    batch_size: int
    n_iter: int
    lists: dict[str, list[Any]]


@dataclass
class WebuiJob:
    manager: FleetManager
    spec: JobSpec
    share: LocalShare
    original: _Original
    stub: bool  # the master renders nothing: its one loop pass (p.sample replaced) only collects the fleet's images
    job: Job | None = None
    result: JobResult | None = None
    error: JobError | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)
    local_done_at: float | None = None
    collected: bool = False
    workers_by_position: list[str] = field(default_factory=list)  # the current batch's image -> worker name
    progress: ProgressEvent | None = None

    # -- the fleet's part, in a background thread ----------------------------------------------------------------
    def run_remote(self, workers: list[str]) -> None:
        indices = range(self.share.count, self.spec.images)
        self.job = Job(self.manager.fleet, self.spec, self._on_event, workers=workers, indices=indices)
        self.manager.job_started(len(indices))
        thread = threading.Thread(target=self._run, name="distributed-webui-job", daemon=True)
        thread.start()

    def _run(self) -> None:
        assert self.job is not None
        try:
            self.result = self.job.run()
        except JobError as error:
            self.error = error
            self.result = error.partial
            logger.error("distributed: %s", error)
        except Exception:  # the job boundary: record it, the master renders what is missing
            logger.exception("distributed: the fleet's part of the job failed")
        finally:
            self.manager.job_finished(self.result, self.spec.workload)
            self.finished.set()

    def _on_event(self, event: ProgressEvent) -> None:
        self.progress = event
        self.manager.job_progress(event.done, event.worker, event.worker_done, event.step, event.steps)

    # -- on the master's last batch ------------------------------------------------------------------------------
    def wait(self, state: Any) -> None:
        """Wait for the fleet while keeping the webui's progress bar moving and passing Interrupt/Skip on.

        The webui offers no notification for its Interrupt and Skip buttons, only flags on `state`, so the wait
        wakes every WAIT_TICK_S to read them; the fleet's completion itself ends the wait at once.
        """
        if self.job is None:
            return
        state.job_count = self.share.iterations + 1
        state.job_no = self.share.iterations
        state.job = "Distributed"
        while not self.finished.wait(WAIT_TICK_S):
            event = self.progress
            if event is not None:
                state.sampling_steps = max(1, event.total)
                state.sampling_step = event.done
                state.textinfo = f"Distributed: {event.done}/{event.total} images from the fleet"
            if state.interrupted or getattr(state, "stopping_generation", False):
                self.job.interrupt()
            elif state.skipped:
                state.skipped = False
                self.job.skip()

    def collected_images(self) -> dict[int, ImageResult]:
        images = self.result.images if self.result is not None else []
        return {image.index: image for image in images}


def read_checkpoint(sd_model: Any) -> Checkpoint | None:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    if info is None or not getattr(info, "title", None):
        return None
    return Checkpoint(
        title=str(info.title),
        model_name=str(getattr(info, "model_name", "") or ""),
        short_hash=getattr(info, "shorthash", None) or getattr(sd_model, "sd_model_hash", None),
        sha256=getattr(info, "sha256", None),
    )


def script_args(p: Any) -> tuple[ScriptArgs, ...]:
    runner = getattr(p, "scripts", None)
    args = tuple(getattr(p, "script_args", None) or ())
    found = []
    for script in getattr(runner, "alwayson_scripts", []) or []:
        name = getattr(script, "name", None)
        if name and script.args_to > script.args_from:
            found.append(ScriptArgs(str(name), args[script.args_from : script.args_to]))
    return tuple(found)


def request_fields(p: Any, kind: str) -> dict[str, Any]:
    fields = {name: getattr(p, name) for name in allowed_fields(kind) if hasattr(p, name)}
    if kind == "img2img":
        fields["init_images"] = [encode_image(image) for image in (getattr(p, "init_images", None) or [])]
        mask = getattr(p, "image_mask", None)
        fields["mask"] = encode_image(mask) if isinstance(mask, Image.Image) else None
    if not getattr(p, "enable_hr", False):
        for name in [f for f in fields if f.startswith("hr_")]:
            del fields[name]
    return fields


def build_spec(p: Any, kind: str, opts: Any, extra_images: bool, slack: float) -> JobSpec:
    overrides = dict(getattr(p, "override_settings", None) or {})
    overrides.pop("sd_model_checkpoint", None)
    overrides.pop("sd_vae", None)
    for key in CARRIED_OPTIONS:
        if hasattr(opts, key) and key not in overrides:
            overrides[key] = getattr(opts, key)
    payload = build_payload(kind, request_fields(p, kind), overrides)
    prompts, negatives = list(p.all_prompts), list(p.all_negative_prompts)
    return JobSpec(
        kind=kind,
        payload=payload,
        images=len(p.all_seeds),
        seed=int(p.all_seeds[0]),
        subseed=int(p.all_subseeds[0]),
        subseed_strength=float(getattr(p, "subseed_strength", 0) or 0),
        workload=Workload(int(p.width), int(p.height), int(p.steps)),
        extra_slack=slack if extra_images else None,
        prompts=prompts,
        negative_prompts=negatives,
    )


def start(p: Any, choice: Choice, manager: FleetManager, shared: Any) -> WebuiJob | None:
    """Plan the job and start the fleet's part; None when this job stays on the master alone."""
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
    needs = Needs(
        kind=kind,
        checkpoint=read_checkpoint(getattr(shared, "sd_model", None)),
        vae=getattr(p, "sd_vae_name", None) or None,
        loras=frozenset(lora_names(*spec.prompts or [], *spec.negative_prompts or [])),
        scripts=script_args(p),
    )
    preps = prepare(members, needs, PREFLIGHT_S)
    ready = [m for m in members if m.name in preps and preps[m.name].excluded is None]
    for name, prep in preps.items():
        if prep.excluded:
            p.comment(f"Distributed: {prep.excluded}")
        if prep.not_forwarded:
            logger.debug("%s lacks the scripts %s; they run on the master's images only", name, prep.not_forwarded)
    if not ready:
        return None
    spec.per_worker = {m.name: preps[m.name].request for m in ready}
    known = [m.cost for m in ready if m.cost is not None and m.calibrated]
    master_cost = manager.master_cost or prior(known, spec.workload)
    slots = [
        Slot(m.name, c.overhead_s, c.per_image(spec.workload), 0.0, m.config.caps.max_batch)
        for m in ready
        for c in [m.cost if m.cost is not None else prior(known, spec.workload)]
    ]
    orchestrator = choice.orchestrator_only  # the accordion's box; the global option is only its default
    share = (
        LocalShare(0, 1, 0)
        if orchestrator
        else local_share(spec.images, p.batch_size, master_cost, slots, spec.workload)
    )
    if share.count == spec.images:
        return None  # the plan keeps everything on the master
    lists = {name: list(getattr(p, name)) for name in LISTS if isinstance(getattr(p, name, None), list)}
    original = _Original(p.batch_size, p.n_iter, lists)
    webui_job = WebuiJob(manager, spec, share, original, stub=share.count == 0)
    _shrink_local_loop(p, webui_job)
    webui_job.run_remote([m.name for m in ready])
    shared.state.job_count = max(1, share.iterations) + 1
    return webui_job


def _shrink_local_loop(p: Any, job: WebuiJob) -> None:
    share = job.share
    keep = max(share.count, 1)  # the stub pass still walks one image's prompt through the loop
    for name, values in job.original.lists.items():
        setattr(p, name, values[:keep])
    p.batch_size = share.batch_size if not job.stub else 1
    p.n_iter = share.iterations if not job.stub else 1
    if job.stub:
        p.sample = _placeholder_sampler(int(p.width), int(p.height))


class _Decoded(list):  # type: ignore[type-arg]
    already_decoded = True  # as the webui's processing.DecodedSamples: the loop skips the VAE for these


def _placeholder_sampler(width: int, height: int) -> Any:
    """The master's sampler when it renders nothing: one blank, already decoded image, dropped when merging.

    The webui's loop stacks what the sampler returns, so it must hold at least one image.
    """

    def sample(*args: Any, **kwargs: Any) -> Any:
        import torch

        return _Decoded([torch.zeros((3, height, width))])

    return sample


def to_tensor(image: Image.Image) -> Any:
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    # +0.5: the webui turns this back into bytes with 255 * x truncated, which must give the same bytes
    return torch.from_numpy((array + 0.5) / 255.0).permute(2, 0, 1)


def merge_batch(p: Any, pp_images: list[Any], job: WebuiJob, fallback: dict[int, Image.Image]) -> list[Any]:
    """The last batch: the master's own images, then every other image by index, with prompts and seeds aligned."""
    share, spec = job.share, job.spec
    first = 0 if job.stub else (share.iterations - 1) * share.batch_size
    own = [] if job.stub else list(pp_images)
    remote = job.collected_images()
    images = list(own)
    workers = [MASTER] * len(own)
    indices = list(range(first, first + len(own)))
    extra_indices = sorted(i for i in remote if i >= spec.images)
    for index in [*range(share.count, spec.images), *extra_indices]:
        if index in remote:
            image = decode_image_bytes(remote[index].png)
            workers.append(remote[index].worker)
        elif index in fallback:
            image = fallback[index]
            workers.append(MASTER)
        else:
            continue  # lost only when the user interrupted
        images.append(to_tensor(image))
        indices.append(index)
    _restore_lists(p, job, indices, remote)
    job.workers_by_position = workers
    return images


def _restore_lists(p: Any, job: WebuiJob, indices: list[int], remote: dict[int, ImageResult]) -> None:
    spec = job.spec
    full = job.original.lists
    for name, values in full.items():
        extended = list(values)
        for index in range(len(values), max(indices, default=-1) + 1):  # extras beyond N
            seed, subseed = spec.seeds_for(index)
            extra = {"all_seeds": seed, "all_subseeds": subseed}
            extended.append(extra.get(name, values[-1]))
        setattr(p, name, extended)
    p.prompts = [p.all_prompts[i] for i in indices]
    p.negative_prompts = [p.all_negative_prompts[i] for i in indices]
    p.seeds = [p.all_seeds[i] for i in indices]
    p.subseeds = [p.all_subseeds[i] for i in indices]
    p.batch_size = job.original.batch_size
    p.n_iter = job.original.n_iter
    if job.stub:
        vars(p).pop("sample", None)  # the class's own sampler again


def missing_indices(job: WebuiJob) -> list[int]:
    have = job.collected_images()
    return [i for i in range(job.share.count, job.spec.images) if i not in have]


def render_missing(p: Any, job: WebuiJob, indices: list[int], process_images_inner: Any) -> dict[int, Image.Image]:
    """What the fleet could not deliver, rendered here with the same prompts and seeds, one image per pass."""
    if not indices:
        return {}
    lists = job.original.lists
    q = copy.copy(p)
    q.scripts = None
    q.prompt = [lists["all_prompts"][i] for i in indices]
    q.negative_prompt = [lists["all_negative_prompts"][i] for i in indices]
    q.seed = [lists["all_seeds"][i] for i in indices]
    q.subseed = [lists["all_subseeds"][i] for i in indices]
    q.styles = []
    q.batch_size, q.n_iter = 1, len(indices)
    q.do_not_save_samples = q.do_not_save_grid = True
    q.extra_generation_params = dict(p.extra_generation_params)
    vars(q).pop("sample", None)
    logger.warning("distributed: rendering %d images the fleet could not deliver on the master", len(indices))
    processed = process_images_inner(q)
    images = processed.images[processed.index_of_first_image :]
    return dict(zip(indices, images, strict=False))
