"""The fleet as the tab and REST API change it: atomic saves, kept passwords, flag workers, escaped HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributed.engine.config import FleetOptions, parse_remotes
from distributed.engine.fleet import WorkerState
from distributed.errors import ConfigError
from distributed.master.manager import FleetManager
from distributed.master.statushtml import workers_table
from distributed.master.views import WorkerInput


def test_add_update_keeps_the_password_and_remove(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", [])
    manager.add(WorkerInput(name="a", url="http://h:1", user="u", password="pw"))
    manager.update("a", WorkerInput(name="a2", url="http://h:2", user="u"))
    saved = json.loads((tmp_path / "workers.json").read_text())
    assert saved["workers"] == [
        {"name": "a2", "url": "http://h:2", "enabled": True, "auth": {"user": "u", "password": "pw"},
         "verify_tls": None, "caps": {"max_batch": None, "max_pixels": None}, "cost_model": None, "benchmark": None}
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="no such worker"):
        manager.remove("a")
    manager.remove("a2")
    assert json.loads((tmp_path / "workers.json").read_text())["workers"] == []


def test_a_user_without_any_password_is_refused(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", [])
    with pytest.raises(ConfigError, match="password"):
        manager.add(WorkerInput(name="a", url="http://h:1", user="u"))
    assert not (tmp_path / "workers.json").exists()


def test_flag_workers_are_shown_and_written_once_edited(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", parse_remotes("flagged:127.0.0.1:7861"))
    assert [(w.name, w.source) for w in manager.workers()] == [("flagged", "--distributed-remotes")]
    manager.set_enabled("flagged", False)
    assert [(w.name, w.source, w.enabled) for w in manager.workers()] == [("flagged", "workers.json", False)]
    assert json.loads((tmp_path / "workers.json").read_text())["workers"][0]["name"] == "flagged"


def test_options_are_validated_and_saved(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", [])
    manager.set_options(FleetOptions(orchestrator_only=True))
    assert json.loads((tmp_path / "workers.json").read_text())["options"]["orchestrator_only"] is True
    assert manager.fleet.config.options.orchestrator_only is True


def test_the_table_escapes_what_workers_and_users_typed(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", [])
    manager.add(WorkerInput(name="ok", url="http://h:1"))
    member = manager.fleet.members["ok"]
    member.set_state(member.state.OFFLINE, "unreachable", "<script>alert(1)</script>")
    html = workers_table(manager.status())
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'data-state="offline"' in html


def test_a_busy_worker_shows_its_chunks_progress(tmp_path: Path) -> None:
    manager = FleetManager(tmp_path / "workers.json", [])
    manager.add(WorkerInput(name="w", url="http://h:1"))
    manager.job_started(8)
    manager.fleet.members["w"].set_state(WorkerState.BUSY, "rendering")
    manager.job_progress(3, "w", 3, step=5, steps=20)
    view = manager.workers()[0]
    assert view.state == "busy" and view.progress == 0.25
    assert "busy 25%" in workers_table(manager.status())
    assert manager.status().job is not None and manager.status().job.done == 3


def test_learned_speeds_of_the_master_and_flag_workers_survive_a_restart(tmp_path: Path) -> None:
    from distributed.engine.costmodel import CostModel, Workload
    from distributed.engine.jobs import JobResult, WorkerStats

    workload = Workload(64, 64, 4)
    path = tmp_path / "workers.json"
    flags = parse_remotes("desk:127.0.0.1:7860")
    manager = FleetManager(path, flags)
    desk = manager.fleet.members["desk"]
    desk.cost, desk.calibrated = CostModel(0.1, 2.5 / workload.units), True
    master = CostModel(0.2, 1.0)
    master.observe(4, workload, 0.4)
    result = JobResult(
        [], 1.0, {"desk": WorkerStats(images=2, busy_s=5.0), "master": WorkerStats(images=4, busy_s=0.4)}, []
    )
    manager.job_finished(result, workload, master)
    manager.close()

    restarted = FleetManager(path, flags)
    assert restarted.master_cost is not None
    assert restarted.master_cost.per_image(workload) == pytest.approx(master.per_image(workload), rel=1e-3)
    assert restarted.master_cost.measured_at == "64x64, 4 steps"
    cost = restarted.fleet.members["desk"].cost
    assert cost is not None and cost.per_image(workload) == pytest.approx(2.5, rel=1e-3)
    assert restarted.source("desk") == "--distributed-remotes"  # remembered, not turned into a file worker
    assert "images/min at 64x64, 4 steps" in restarted.status().master_speed
    restarted.close()


def test_learned_speeds_are_saved_only_when_they_move_and_never_push_out_the_users_backup(tmp_path: Path) -> None:
    from distributed.engine.costmodel import CostModel, Workload
    from distributed.engine.jobs import JobResult, WorkerStats

    workload = Workload(64, 64, 4)
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"workers": [{"name": "desk", "url": "http://h:1"}]}), encoding="utf-8")
    manager = FleetManager(path, [])
    manager.update("desk", WorkerInput(name="desk", url="http://h:2"))  # a person's edit: the file before is .bak
    backup = (tmp_path / "workers.json.bak").read_text(encoding="utf-8")
    fleet = manager.fleet
    desk = fleet.members["desk"]
    desk.cost, desk.calibrated = CostModel(0.1, 1.0 / workload.units), True
    result = JobResult([], 1.0, {"desk": WorkerStats(images=1, busy_s=1.0)}, [])

    manager.job_finished(result, workload)
    saved = path.read_text(encoding="utf-8")
    assert json.loads(saved)["workers"][0]["cost_model"]["seconds_per_unit"] == pytest.approx(1.0 / workload.units)
    assert (tmp_path / "workers.json.bak").read_text(encoding="utf-8") == backup  # still the person's version
    assert manager.fleet is fleet  # not rebuilt (no new clients, no repeated TLS warnings)

    desk.cost = CostModel(0.1, 1.01 / workload.units)  # 1%: not worth a write
    manager.job_finished(result, workload)
    assert path.read_text(encoding="utf-8") == saved
    desk.cost = CostModel(0.1, 1.5 / workload.units)  # 50%: saved
    manager.job_finished(result, workload)
    assert path.read_text(encoding="utf-8") != saved
    assert (tmp_path / "workers.json.bak").read_text(encoding="utf-8") == backup
    manager.close()


def test_a_speed_counts_as_moved_whichever_term_moved() -> None:
    from distributed.engine.config import CostModelState
    from distributed.master.manager import _changed

    label = "512x512, 20 steps"
    old = CostModelState(overhead_s=0.0, seconds_per_unit=0.2, step_overhead_s=0.01, measured_at=label)
    assert _changed(None, old)
    assert not _changed(old, old)
    assert not _changed(old, CostModelState(overhead_s=0.0, seconds_per_unit=0.202, step_overhead_s=0.01))
    assert _changed(old, CostModelState(overhead_s=0.0, seconds_per_unit=0.3, step_overhead_s=0.01))
    assert _changed(old, CostModelState(overhead_s=0.0, seconds_per_unit=0.2, step_overhead_s=0.05, measured_at=label))
