"""The mutation check: named breakages of promised features, each applied to a scratch copy of the tree, with the
tests that must then fail. A breakage its tests survive means a claim nothing guards.

Usage: python tools/mutations.py [--only NAME ...] [--list]
Runs from the repository root with the venvs `bash tools/dev.sh` made (.venv, .venv-a1111pins). Exit status 0 only
when every breakage applied and made its tests fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAIN = [str(REPO / ".venv/bin/python"), "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"]
BROWSER = [str(REPO / ".venv-a1111pins/bin/python"), "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"]
BROWSER += ["-p", "no:hypothesispytest"]
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # each must have a failing test once the breakage is in
    runner: tuple[str, ...] = tuple(MAIN)


MUTATIONS = [
    Mutation(
        "drop the re-queue",
        "distributed/engine/chunkbook.py",
        "                self._state[index] = IndexState.PENDING\n",
        "                self._state[index] = IndexState.DONE  # mutation: lost images are forgotten\n",
        (
            "tests/unit/core/test_chunkbook.py",
            "tests/unit/core/test_simulated_job.py",
            "tests/integration/test_reliability.py::test_fault_matrix[refuse]",
            "tests/integration/test_reliability.py::test_fault_matrix[unauthorized]",
            "tests/integration/test_reliability.py::test_fault_matrix[tls]",
        ),
    ),
    Mutation(
        "drop the interrupt call",
        "distributed/engine/admission.py",
        '            self._side[self._rt.submit(member.client.interrupt)] = ("interrupt", member)\n',
        "            pass  # mutation: a chunk past its deadline keeps rendering on its worker\n",
        (
            "tests/unit/core/test_simulated_job.py",
            "tests/integration/test_liveness.py::test_a_stuck_chunk_is_interrupted_retried_longer_and_its_worker_held_out",
        ),
    ),
    Mutation(
        "echo the password to the page",
        "distributed/webui/tab.py",
        '                "",  # a stored password is never sent to the browser; empty keeps it\n',
        "                next((m.config.auth.password.get_secret_value() for m in manager.fleet if m.name == selected"
        " and m.config.auth and m.config.auth.password), ''),  # mutation\n",
        ("tests/ui/test_tab.py",),
        tuple(BROWSER),
    ),
    Mutation(
        "first come, first served",
        "distributed/engine/share.py",
        "            best = min(wanting, key=lambda e: (len(e.held), e.arrival))\n",
        "            best = claimant  # mutation: whoever asks first takes the worker\n",
        ("tests/unit/core/test_share.py",),
    ),
    Mutation(
        "keep rendering for a client that left",
        "distributed/gateway/app.py",
        '            logger.info("job %d: the client went away; interrupting it on its workers", queued.id)\n'
        "            queued.job.interrupt()\n",
        "            pass  # mutation: the job runs on for nobody\n",
        ("tests/integration/test_serve.py::test_a_client_gone_mid_job_frees_its_workers_at_once",),
    ),
    Mutation(
        "finish a fused image with the batch-2 call",
        "distributed/parallel/split.py",
        "            result = torch.cat([self._local(*half) for half in halves])\n",
        "            result = self._local(sample, timestep, encoder_hidden_states, kwargs)  # mutation\n",
        ("tests/unit/worker/test_cfg_split.py::test_a_peer_killed_mid_image_loses_nothing",),
    ),
    Mutation(
        "count a report on an expired lease",
        "distributed/training/leases.py",
        '        if state != "leased" or expires <= now:\n',
        "        if False:  # mutation: a lease past its expiry still reports\n",
        ("tests/unit/core/test_leases.py",),
    ),
    Mutation(
        "skip the seed check",
        "distributed/engine/jobs.py",
        "    if seeds[: len(expected)] != wanted:\n",
        "    if False:  # mutation: any seeds pass\n",
        ("tests/unit/core/test_jobs.py",),
    ),
    Mutation(
        "drop the TLS verify",
        "distributed/engine/client.py",
        "        self.verify = verify_tls_default if config.verify_tls is None else config.verify_tls\n",
        "        self.verify = False  # mutation: certificates are never checked\n",
        ("tests/integration/test_reliability.py::test_tls_verification",),
    ),
    Mutation(
        "sample on another noise schedule",
        "distributed/worker/kdiffusion.py",
        "        t = torch.linspace(len(self.sigmas) - 1, 0, n)\n",
        "        t = torch.linspace(len(self.sigmas) - 1, 1, n)  # mutation: not A1111's uniform schedule\n",
        ("tests/unit/worker/test_kdiffusion.py", "tests/integration/test_worker_fidelity.py"),
    ),
    Mutation(
        "use the CLIP folder's text encoder",
        "distributed/worker/loader.py",
        "        if not encoder_state:\n",
        "        if True:  # mutation: the checkpoint's own text encoder is ignored\n",
        ("tests/unit/worker/test_loader.py", "tests/integration/test_worker_fidelity.py"),
    ),
    Mutation(
        "ignore emphasis",
        "distributed/worker/conditioning.py",
        '    if emphasis in ("None", "Ignore"):\n',
        "    if True:  # mutation: (word:1.5) is plain text\n",
        ("tests/unit/worker/test_prompts.py", "tests/integration/test_worker_fidelity.py"),
    ),
    Mutation(
        "leave LoRAs unmerged",
        "distributed/worker/lora.py",
        "                    weight.copy_((weight.to(delta.dtype) + delta).to(weight.dtype))\n",
        "                    pass  # mutation: <lora:...> tags change nothing\n",
        ("tests/unit/worker/test_lora.py", "tests/integration/test_worker_fidelity.py"),
    ),
]


def scratch_copy(target: Path) -> None:
    """The tree as git sees it (tracked and untracked, not ignored files), without the venvs."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    shared = REPO.parent / "shared"
    if shared.exists():  # tests find the tiny checkpoint beside the repository
        (target.parent / "shared").symlink_to(shared)


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.path
    text = path.read_text(encoding="utf-8")
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(f"{mutation.name}: {mutation.path} holds the text to break {found} times (expected once)")
    path.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")


def run(mutation: Mutation) -> tuple[list[str], float, str]:
    """The named tests that still passed on the broken copy (none, as it must be), the time, the first failure."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
        root = Path(folder) / "repo"
        root.mkdir()
        scratch_copy(root)
        apply(mutation, root)
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "300"}
        env["DISTRIBUTED_WORKER_PYTHON"] = str(REPO / ".venv/bin/python")
        command = [*mutation.runner, *mutation.tests]
        started = time.monotonic()
        try:
            finished = subprocess.run(
                command, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return [], time.monotonic() - started, "timed out"  # a hang is a failure too
        lines = [line for line in finished.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        failed = [line.split()[1] for line in lines]
        if finished.returncode not in (0, 1):  # collection errors, usage errors: nothing was really tested
            sys.stderr.write(finished.stdout[-3000:] + finished.stderr[-3000:])
            return list(mutation.tests), time.monotonic() - started, "pytest could not run the tests"
        passed = [test for test in mutation.tests if not any(f == test or f.startswith(test + "::") for f in failed)]
        reason = lines[0].partition(" - ")[2][:100] if lines else ""
        return passed, time.monotonic() - started, reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this breakage")
    parser.add_argument("--list", action="store_true", help="list the breakages and their tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no breakage named {sorted(unknown)}; --list shows them")
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name}: {mutation.path} -> {' '.join(mutation.tests)}")
        return 0
    survived = []
    for mutation in chosen:
        passed, seconds, reason = run(mutation)
        verdict = "SURVIVED" if passed else "caught"
        detail = f"still passing: {' '.join(passed)}" if passed else f"{len(mutation.tests)} target(s) failed: {reason}"
        print(f"{verdict:8}  {mutation.name:32} {seconds:6.1f} s  {detail}", flush=True)
        if passed:
            survived.append(mutation.name)
    if survived:
        print(f"{len(survived)} breakage(s) no test noticed: {', '.join(survived)}", file=sys.stderr)
        return 1
    print(f"all {len(chosen)} breakages made their tests fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
