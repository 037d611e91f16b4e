"""The fleet as the webui's tab and REST API manage it: one lock around every change, atomic saves.

Workers come from workers.json and from `--distributed-remotes`. Edits go to the file (a flag-given worker is
written there once the user edits it). The live Fleet keeps each member's state and learned speed across edits of
other workers. Nothing here imports the webui or gradio, so the tab, the REST routes and the tests share it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distributed import __version__
from distributed.compat import copy_with, dump, error_locations, validate
from distributed.engine.benchmark import BenchmarkOutcome, benchmark_each, benchmark_member
from distributed.engine.client import WorkerClient
from distributed.engine.config import (
    CostModelState,
    FleetConfig,
    FleetOptions,
    WorkerConfig,
    config_to_json,
    load_config,
    parse_config,
    save_config,
)
from distributed.engine.costmodel import REFERENCE, CostModel, Workload
from distributed.engine.fleet import Fleet, FleetMember, WorkerState
from distributed.engine.jobs import JobResult
from distributed.engine.lane import MASTER
from distributed.engine.prober import Prober
from distributed.errors import ConfigError, WorkerError
from distributed.master.payload import OWN_API_REQUEST
from distributed.master.views import JobView, StatusView, ThroughputPoint, WorkerInput, WorkerView, worker_view

logger = logging.getLogger(__name__)

HISTORY_LENGTH = 200  # throughput points kept for the tab's chart
FILE, FLAG = "workers.json", "--distributed-remotes"


class FleetManager:
    def __init__(
        self,
        path: Path,
        flag_workers: list[WorkerConfig],
        verify_tls_default: bool = True,
        config: FleetConfig | None = None,  # instead of reading `path` (which a save still checks first)
    ) -> None:
        self.path = path
        self.verify_tls_default = verify_tls_default
        self._lock = threading.RLock()
        self._flag_workers = list(flag_workers)
        self._file = config if config is not None else load_config(path)
        self.fleet = Fleet(self._merged(), verify_tls_default)
        saved = self._file.learned.get(MASTER)
        self.master_cost: CostModel | None = CostModel.from_state(saved) if saved is not None else None
        self.job = JobView(running=False)
        self.prober = Prober(lambda: self.fleet)
        self.history: deque[ThroughputPoint] = deque(maxlen=HISTORY_LENGTH)
        self._step: dict[str, float] = {}  # busy worker -> sampling progress of its current chunk, 0..1

    # -- reading -------------------------------------------------------------------------------------------------
    def _merged(self) -> FleetConfig:
        names = {w.name for w in self._file.workers}
        learned = self._file.learned
        extra = [
            copy_with(w, cost_model=learned[w.name]) if w.cost_model is None and w.name in learned else w
            for w in self._flag_workers
            if w.name not in names
        ]
        return copy_with(self._file, workers=[dump(w) for w in [*self._file.workers, *extra]])

    def source(self, name: str) -> str:
        return FILE if any(w.name == name for w in self._file.workers) else FLAG

    def workers(self) -> list[WorkerView]:
        with self._lock:
            return [
                worker_view(m, self.source(m.name), self._step.get(m.name) if m.state == WorkerState.BUSY else None)
                for m in self.fleet
            ]

    def status(self) -> StatusView:
        with self._lock:
            return StatusView(
                version=__version__,
                config_path=str(self.path),
                workers=self.workers(),
                options=self._file.options,
                master_ipm=round(self.master_cost.ipm(), 4) if self.master_cost else None,
                master_speed=self.master_cost.describe() if self.master_cost else None,
                job=self.job,
                throughput=list(self.history),
            )

    def enabled_names(self) -> list[str]:
        with self._lock:
            return [m.name for m in self.fleet if m.config.enabled]

    # -- changing ------------------------------------------------------------------------------------------------
    def _commit(self, config: FleetConfig) -> None:
        """Validate, save atomically, then swap the live fleet, keeping what members learned."""
        checked = parse_config(_plain(config), str(self.path))
        learned = self.fleet.learned_config()
        costs = {w.name: w.cost_model for w in learned.workers}
        workers = [copy_with(w, cost_model=costs.get(w.name) or w.cost_model) for w in checked.workers]
        checked = copy_with(checked, workers=[dump(w) for w in workers])
        save_config(checked, self.path)
        self._file = checked
        old = self.fleet
        fleet = Fleet(self._merged(), self.verify_tls_default)
        for name, member in fleet.members.items():
            previous = old.members.get(name)
            if previous is not None and previous.config == member.config:
                fleet.members[name] = previous  # unchanged: keep its client, state and speed
            elif previous is not None:
                if previous.cost is not None:
                    member.cost, member.calibrated = previous.cost, previous.calibrated
                same_place = previous.config.url == member.config.url and previous.state != WorkerState.DISABLED
                if member.config.enabled and same_place:  # what the last check said still holds
                    member.model = previous.model
                    member.set_state(previous.state, previous.status.reason)
        self.fleet = fleet
        for name, member in old.members.items():
            if fleet.members.get(name) is not member:
                member.client.close()

    def _entry(self, data: WorkerInput, previous: WorkerConfig | None) -> WorkerConfig:
        auth = None
        if data.user:
            password = data.password.get_secret_value() if data.password is not None else ""
            if data.password_env:
                auth = {"user": data.user, "password_env": data.password_env}
            elif password:
                auth = {"user": data.user, "password": password}
            elif previous is not None and previous.auth is not None and previous.auth.password is not None:
                auth = {"user": data.user, "password": previous.auth.password.get_secret_value()}
            else:
                raise ConfigError("a user needs a password or password_env", worker=data.name, field="auth")
        entry = {
            **(_plain(previous) if previous is not None else {}),
            "name": data.name.strip(),
            "url": data.url.strip(),
            "enabled": data.enabled,
            "auth": auth,
            "verify_tls": data.verify_tls,
            "caps": {"max_batch": data.max_batch, "max_pixels": data.max_pixels},
        }
        try:
            return validate(WorkerConfig, entry)
        except ValidationError as exc:
            location, message = error_locations(exc)[0]
            raise ConfigError(
                message, path=str(self.path), worker=data.name, field=".".join(map(str, location))
            ) from None

    def _current(self, name: str) -> WorkerConfig | None:
        for worker in self._merged().workers:
            if worker.name == name:
                return worker
        return None

    def add(self, data: WorkerInput) -> WorkerView:
        with self._lock:
            if self._current(data.name.strip()) is not None:
                raise ConfigError("a worker with this name exists", worker=data.name, field="name")
            entry = self._entry(data, None)
            self._commit(copy_with(self._file, workers=[*map(dump, self._file.workers), dump(entry)]))
            return worker_view(self.fleet.members[entry.name], FILE)

    def update(self, name: str, data: WorkerInput) -> WorkerView:
        with self._lock:
            previous = self._current(name)
            if previous is None:
                raise ConfigError("no such worker", worker=name)
            if data.name.strip() != name and self._current(data.name.strip()) is not None:
                raise ConfigError("a worker with this name exists", worker=data.name, field="name")
            entry = self._entry(data, previous)
            kept = [dump(w) for w in self._file.workers if w.name != name]
            self._commit(copy_with(self._file, workers=[*kept, dump(entry)]))
            self._flag_workers = [w for w in self._flag_workers if w.name != name]
            return worker_view(self.fleet.members[entry.name], FILE)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._current(name) is None:
                raise ConfigError("no such worker", worker=name)
            self._flag_workers = [w for w in self._flag_workers if w.name != name]
            self._commit(copy_with(self._file, workers=[dump(w) for w in self._file.workers if w.name != name]))

    def set_enabled(self, name: str, enabled: bool) -> WorkerView:
        with self._lock:
            current = self._current(name)
            if current is None:
                raise ConfigError("no such worker", worker=name)
            entry = copy_with(current, enabled=enabled)
            kept = [dump(w) for w in self._file.workers if w.name != name]
            self._commit(copy_with(self._file, workers=[*kept, dump(entry)]))
            self._flag_workers = [w for w in self._flag_workers if w.name != name]
            member = self.fleet.members[name]
            member.set_state(WorkerState.DISABLED if not enabled else WorkerState.ONLINE, "by the user")
            return worker_view(member, FILE)

    def set_options(self, options: FleetOptions) -> FleetOptions:
        with self._lock:
            self._commit(copy_with(self._file, options=dump(options)))
            return self._file.options

    # -- talking to workers --------------------------------------------------------------------------------------
    def member(self, name: str) -> FleetMember:
        with self._lock:
            member = self.fleet.members.get(name)
        if member is None:
            raise ConfigError("no such worker", worker=name)
        return member

    def test(self, name: str) -> str:
        """Ask one worker for its checkpoints: the answer or the error, in words."""
        member = self.member(name)
        try:
            models = member.client.sd_models()
        except WorkerError as error:
            member.record_error(error)
            return str(error)
        if member.state != WorkerState.DISABLED:
            member.set_state(WorkerState.ONLINE, "answered the connection test")
        titles = ", ".join(str(m.get("title")) for m in models[:5]) or "none"
        return f"{name}: online, {len(models)} checkpoints ({titles})"

    def benchmark(self, names: list[str], workload: Workload, budget_s: float = 10.0) -> Iterator[BenchmarkOutcome]:
        """Benchmark workers at once; each outcome as it finishes. Fitted speeds are saved to workers.json."""
        members = [self.member(n) for n in names] if names else [m for m in self.fleet if m.config.enabled]
        for outcome in benchmark_each(members, workload, budget_s):
            if outcome.record is not None:
                member = self.fleet.members.get(outcome.worker)
                if member is not None and member.state != WorkerState.DISABLED:
                    member.set_state(WorkerState.ONLINE, "answered the benchmark")
                self._keep_benchmark(outcome)
            yield outcome

    def benchmark_master(
        self,
        url: str,
        api_auth: tuple[str, str] | None,
        workload: Workload,
        budget_s: float = 10.0,
        request: dict[str, Any] | None = None,  # what each request carries; by default: "do not distribute this"
    ) -> BenchmarkOutcome:
        """This machine through its own API, from outside any generation: the request waits for the webui's queue
        like any API call, so it never takes the queue lock from inside a job. The fit becomes the master's speed."""
        auth = {"user": api_auth[0], "password": api_auth[1]} if api_auth else None
        config = validate(WorkerConfig, {"name": "this-machine", "url": url, "auth": auth, "verify_tls": False})
        member = FleetMember(config, WorkerClient(config, self.fleet.config.options.timeouts), None)
        try:
            outcome = benchmark_member(
                member, workload, budget_s, request=OWN_API_REQUEST if request is None else request
            )
        finally:
            member.client.close()
        if outcome.cost is not None:
            with self._lock:
                self.master_cost = outcome.cost
                self._save_learned()
        return BenchmarkOutcome(MASTER, outcome.cost, outcome.record, outcome.error)

    def _keep_benchmark(self, outcome: BenchmarkOutcome) -> None:
        with self._lock:
            if not any(w.name == outcome.worker for w in self._file.workers):
                return  # a flag-given worker: its speed stays in memory
            workers = [
                copy_with(w, benchmark=dump(outcome.record)) if w.name == outcome.worker and outcome.record else w
                for w in self._file.workers
            ]
            try:
                self._commit(copy_with(self._file, workers=[dump(w) for w in workers]))
            except ConfigError as error:
                logger.warning("benchmark of %s not saved: %s", outcome.worker, error)

    # -- jobs ----------------------------------------------------------------------------------------------------
    def job_started(self, total: int) -> None:
        with self._lock:
            self.job = JobView(running=True, total=total)
            self._step.clear()

    def job_progress(self, done: int, worker: str, worker_done: int, step: int = 0, steps: int = 0) -> None:
        with self._lock:
            self.job.done = max(self.job.done, done)
            self.job.workers[worker] = worker_done
            self._step[worker] = min(1.0, step / steps) if steps else 0.0

    def job_finished(self, result: JobResult | None, workload: Workload, master_cost: CostModel | None = None) -> None:
        """Record a job's throughput for the chart and save the speeds it taught us (the master's included)."""
        now = time.time()
        with self._lock:
            self.job.running = False
            if master_cost is not None and master_cost.observations:
                self.master_cost = master_cost
            if result is None:
                return
            self.job.failures = list(result.failures)
            for name, stats in result.workers.items():
                if stats.images and stats.busy_s > 0:
                    ipm = stats.images * 60.0 / stats.busy_s
                    self.history.append(ThroughputPoint(when=now, worker=name, images=stats.images, ipm=ipm))
            self._save_learned()

    def _save_learned(self) -> None:
        """Learned speeds to workers.json (file workers in their entries, the master and flag workers under
        `learned`), only when one changed materially; the live fleet is not rebuilt and `.bak` keeps the last
        version a person wrote."""
        learned = dict(self._file.learned)
        if self.master_cost is not None and self.master_cost.observations:
            learned[MASTER] = self.master_cost.to_state()
        file_names = {w.name for w in self._file.workers}
        costs = {m.name: m.cost.to_state() for m in self.fleet if m.calibrated and m.cost is not None}
        learned.update({name: state for name, state in costs.items() if name not in file_names})
        workers = [copy_with(w, cost_model=costs.get(w.name) or w.cost_model) for w in self._file.workers]
        before = {**{w.name: w.cost_model for w in self._file.workers}, **self._file.learned}
        after = {**{w.name: w.cost_model for w in workers}, **learned}
        if not any(_changed(before.get(name), state) for name, state in after.items()):
            return
        updated = copy_with(
            self._file, workers=[dump(w) for w in workers], learned={k: dump(v) for k, v in learned.items()}
        )
        try:
            save_config(updated, self.path, keep_backup=False)
        except ConfigError as error:
            logger.warning("learned speeds not saved: %s", error)
            return
        self._file = updated

    def close(self) -> None:
        self.prober.stop()
        with self._lock:
            self.fleet.close()


def _plain(config: FleetConfig | WorkerConfig) -> dict:  # type: ignore[type-arg]
    """JSON-ready data with secrets revealed: for re-validation inside the master only, never for display."""
    if isinstance(config, FleetConfig):
        return config_to_json(config)
    return config_to_json(FleetConfig(workers=[config]))["workers"][0]  # type: ignore[no-any-return]


SPEED_CHANGE = 0.05  # a learned speed is saved again when it moved by more than this (relative)


def _changed(old: CostModelState | None, new: CostModelState | None) -> bool:
    """A speed worth saving again: its prediction for one image, or for a batch, moved by more than SPEED_CHANGE
    at the size it learned from (every term counts, whichever moved)."""
    if new is None:
        return False
    if old is None:
        return True
    before, after = CostModel.from_state(old), CostModel.from_state(new)
    workload = Workload.from_label(new.measured_at) or REFERENCE
    for images in (1, 4):
        was, now = before.predict(images, workload), after.predict(images, workload)
        if abs(now - was) > SPEED_CHANGE * was:
            return True
    return False
