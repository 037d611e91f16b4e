from __future__ import annotations

import threading
import time

from distributed.worker.jobs import FifoLock, JobState


def test_fifo_lock_serves_in_arrival_order() -> None:
    lock = FifoLock()
    order: list[int] = []
    holding = threading.Event()
    release = threading.Event()

    def first() -> None:
        with lock.hold():
            holding.set()
            release.wait(5)
            order.append(0)

    def later(n: int, queued: threading.Event) -> None:
        queued.set()
        with lock.hold():
            order.append(n)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    holding.wait(5)
    for n in range(1, 8):
        queued = threading.Event()
        thread = threading.Thread(target=later, args=(n, queued))
        thread.start()
        queued.wait(5)
        # wait until this thread has its ticket before starting the next one
        deadline = time.monotonic() + 5
        while lock.waiting < n + 1 and time.monotonic() < deadline:
            threading.Event().wait(0.001)
        threads.append(thread)
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))


def test_progress_follows_a1111_formula() -> None:
    state = JobState()
    assert state.progress(0)["progress"] == 0
    state.begin("scripts_txt2img", batches=4)
    state.begin_batch(1, images=1, width=64, height=64, steps=10)
    state.after_step(5, 10)
    progress = state.progress(queued=2)
    assert abs(progress["progress"] - (0.01 + 1 / 4 + 0.25 * 0.5)) < 1e-9
    assert progress["state"]["sampling_step"] == 5
    assert progress["state"]["queued"] == 2
    state.end()
    assert state.progress(0)["state"]["job_count"] == 0


def test_emulated_step_waits_and_interrupt_wakes_it() -> None:
    state = JobState(emulate_ipm=6)  # ten seconds per reference image
    state.begin("job", batches=1)
    state.begin_batch(0, images=1, width=64, height=64, steps=4)
    threading.Timer(0.2, state.interrupt).start()
    started = time.monotonic()
    assert state.after_step(1, 4) is True  # would wait 2.5 s; the interrupt ends it
    assert time.monotonic() - started < 1.5


def test_skip_and_interrupt_do_nothing_when_idle() -> None:
    state = JobState()
    state.interrupt()
    state.skip()
    state.begin("job", batches=1)
    state.begin_batch(0, images=1, width=64, height=64, steps=2)
    assert state.after_step(1, 2) is False
