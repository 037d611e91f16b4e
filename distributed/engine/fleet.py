"""The fleet's workers and their states: one place for every state change, read by the CLI and the webui.

States are an explicit enum; `FleetMember.set_state` is the only way to change one, so what a user sees always
comes from the same transitions (online, busy, offline with a reason, auth refused, model missing, disabled).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from distributed.compat import copy_with
from distributed.engine.client import WorkerClient
from distributed.engine.config import FleetConfig, WorkerConfig
from distributed.engine.costmodel import CostModel
from distributed.errors import WorkerAuthError, WorkerError, WorkerModelMissing

logger = logging.getLogger(__name__)

PROBE_BACKOFF_START_S = 1.0
PROBE_BACKOFF_MAX_S = 30.0


class WorkerState(str, Enum):
    UNCHECKED = "not checked yet"  # from start until the first health check or job answers
    ONLINE = "online"
    BUSY = "busy"
    OFFLINE = "offline"
    AUTH_REFUSED = "auth refused"
    MODEL_MISSING = "model missing"
    DISABLED = "disabled"

    @property
    def usable(self) -> bool:
        return self in (WorkerState.UNCHECKED, WorkerState.ONLINE, WorkerState.BUSY)


@dataclass
class WorkerStatus:
    state: WorkerState
    reason: str = ""
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    failures: int = 0  # consecutive failures, for the probe backoff


def state_for_error(error: WorkerError) -> WorkerState:
    if isinstance(error, WorkerAuthError):
        return WorkerState.AUTH_REFUSED
    if isinstance(error, WorkerModelMissing):
        return WorkerState.MODEL_MISSING
    return WorkerState.OFFLINE


class FleetMember:
    def __init__(self, config: WorkerConfig, client: WorkerClient, cost: CostModel | None) -> None:
        self.config = config
        self.client = client
        self.cost = cost
        self.calibrated = cost is not None  # a fitted model from workers.json, or learned in this process
        self.model: str | None = None  # its loaded checkpoint, as its options last said
        self._lock = threading.Lock()
        self._status = WorkerStatus(WorkerState.UNCHECKED if config.enabled else WorkerState.DISABLED)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def status(self) -> WorkerStatus:
        with self._lock:
            return WorkerStatus(**vars(self._status))

    @property
    def state(self) -> WorkerState:
        with self._lock:
            return self._status.state

    def set_state(self, state: WorkerState, reason: str = "", error: str | None = None) -> None:
        with self._lock:
            previous = self._status
            if previous.state == WorkerState.DISABLED and state != WorkerState.DISABLED:
                return  # only the user enables a worker
            failures = previous.failures + 1 if state == WorkerState.OFFLINE else 0
            if state == previous.state and reason == previous.reason:
                self._status.last_error = error or previous.last_error
                self._status.failures = failures
                return
            self._status = WorkerStatus(state, reason, time.time(), error or previous.last_error, failures)
        if state.usable:  # busy and online alternate with every chunk: only a return is news
            (logger.debug if previous.state.usable else logger.info)("worker %s: %s", self.name, state.value)
        else:
            logger.warning("worker %s: %s (%s)", self.name, state.value, reason)

    def record_error(self, error: WorkerError) -> None:
        """The state the error means, with what happened (call, URL, cause) as the reason people read."""
        self.set_state(state_for_error(error), error.detail, str(error))

    def probe_delay(self) -> float:
        failures = self.status.failures
        delay: float = min(PROBE_BACKOFF_MAX_S, PROBE_BACKOFF_START_S * 2.0 ** max(0, failures - 1))
        return delay

    def ensure_cost(self, prior: CostModel) -> CostModel:
        if self.cost is None:
            self.cost = prior.copy()
        return self.cost

    def to_config(self) -> WorkerConfig:
        """This worker's entry with what was learned (its cost model) for saving to workers.json."""
        if self.cost is None or not self.calibrated:
            return self.config
        return copy_with(self.config, cost_model=self.cost.to_state())


class Fleet:
    def __init__(self, config: FleetConfig, verify_tls_default: bool = True) -> None:
        self.config = config
        self.members: dict[str, FleetMember] = {}
        for worker in config.workers:
            cost = CostModel.from_state(worker.cost_model) if worker.cost_model else None
            client = WorkerClient(worker, config.options.timeouts, verify_tls_default)
            self.members[worker.name] = FleetMember(worker, client, cost)

    def __iter__(self) -> Iterator[FleetMember]:
        return iter(self.members.values())

    def usable(self) -> list[FleetMember]:
        return [m for m in self.members.values() if m.state.usable]

    def learned_config(self) -> FleetConfig:
        return copy_with(self.config, workers=[m.to_config() for m in self.members.values()])

    def close(self) -> None:
        for member in self.members.values():
            member.client.close()
