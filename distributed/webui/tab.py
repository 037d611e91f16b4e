"""The "Distributed" tab: live worker table, add/edit/remove, enable, test, benchmark, options, throughput chart.

Only gradio here, and only what gradio 3.41 and 4.40 both have (gr.update, Blocks events, generators), so the tab
runs inside either webui or on its own for the browser tests. Building it makes no network call; the table
refreshes when javascript/distributed.js clicks the hidden refresh button while the tab is visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from distributed.engine.config import FleetOptions, Timeouts
from distributed.engine.costmodel import REFERENCE, Workload
from distributed.errors import ConfigError
from distributed.master.manager import FleetManager
from distributed.master.statushtml import throughput_chart, workers_table
from distributed.master.views import WorkerInput
from distributed.webui.runtime import OwnApi

NEW = "(new worker)"
VERIFY = {"default (global setting)": None, "verify certificate": True, "skip verification": False}
BENCH_SIZES = {"512x512, 20 steps (reference)": REFERENCE, "64x64, 4 steps (quick check)": Workload(64, 64, 4)}
FORM_FIELDS = 9  # name, url, user, password, password_env, enabled, verify, max_batch, max_pixels


def _choices(manager: FleetManager) -> list[str]:
    return [NEW, *[w.name for w in manager.workers()]]


def _form_values(manager: FleetManager, selected: str) -> list[Any]:
    for worker in manager.workers():
        if worker.name == selected:
            verify = next(label for label, value in VERIFY.items() if value == worker.verify_tls)
            auth = worker.auth
            return [
                worker.name,
                worker.url,
                auth.user if auth else "",
                "",  # a stored password is never sent to the browser; empty keeps it
                (auth.password_env or "") if auth else "",
                worker.enabled,
                verify,
                worker.caps.max_batch or 0,
                worker.caps.max_pixels or 0,
            ]
    return ["", "", "", "", "", True, next(iter(VERIFY)), 0, 0]


def _input(values: list[Any]) -> WorkerInput:
    name, url, user, password, password_env, enabled, verify, max_batch, max_pixels = values
    return WorkerInput(
        name=str(name or "").strip(),
        url=str(url or "").strip(),
        enabled=bool(enabled),
        user=str(user).strip() or None if user else None,
        password=password or None,
        password_env=str(password_env).strip() or None if password_env else None,
        verify_tls=VERIFY.get(verify),
        max_batch=int(max_batch) if max_batch else None,
        max_pixels=int(max_pixels) if max_pixels else None,
    )


def build_tab(manager: FleetManager, startup_error: str | None = None, own: OwnApi | None = None) -> gr.Blocks:
    def render() -> tuple[str, str]:
        status = manager.status()
        return workers_table(status), throughput_chart(status.throughput)

    def after_change(message: str, selected: str) -> tuple[Any, ...]:
        table, chart = render()
        choices = _choices(manager)
        chosen = selected if selected in choices else NEW
        return (message, table, chart, gr.update(choices=choices, value=chosen), *_form_values(manager, chosen))

    def save(selected: str, *values: Any) -> tuple[Any, ...]:
        try:
            data = _input(list(values))
            if selected == NEW:
                view = manager.add(data)
                message = f"Added {view.name}. Saved to {manager.path}."
            else:
                view = manager.update(selected, data)
                message = f"Saved {view.name} to {manager.path}."
            return after_change(message, view.name)
        except (ConfigError, ValueError) as error:
            return after_change(f"Not saved: {error}", selected)

    def remove(selected: str) -> tuple[Any, ...]:
        if selected == NEW:
            return after_change("Pick a worker to remove.", selected)
        try:
            manager.remove(selected)
            return after_change(f"Removed {selected}.", NEW)
        except ConfigError as error:
            return after_change(f"Not removed: {error}", selected)

    def set_enabled(selected: str, enabled: bool) -> tuple[Any, ...]:
        if selected == NEW:
            return after_change("Pick a worker first.", selected)
        try:
            manager.set_enabled(selected, enabled)
            return after_change(f"{selected} {'enabled' if enabled else 'disabled'}.", selected)
        except ConfigError as error:
            return after_change(str(error), selected)

    def test(selected: str) -> tuple[str, str, str]:
        message = "Pick a worker to test." if selected == NEW else manager.test(selected)
        return (message, *render())

    def benchmark(selected: str, size: str, everyone: bool) -> Iterator[tuple[str, str, str]]:
        names = [] if everyone else ([] if selected == NEW else [selected])
        if not everyone and not names:
            yield ("Pick a worker to benchmark.", *render())
            return
        workload = BENCH_SIZES.get(size, REFERENCE)
        who = "every enabled worker" if everyone else selected
        lines = [f"Benchmarking {who} at {workload.width}x{workload.height}, {workload.steps} steps..."]
        yield ("\n".join(lines), *render())
        try:
            for outcome in manager.benchmark(names, workload):
                if outcome.cost is not None:
                    lines.append(f"{outcome.worker}: {outcome.cost.ipm():.1f} images/min at 512x512, 20 steps")
                else:
                    lines.append(f"{outcome.worker}: failed: {outcome.error}")
                yield ("\n".join(lines), *render())
        except ConfigError as error:
            lines.append(str(error))
        lines.append("Done.")
        yield ("\n".join(lines), *render())

    def bench_master(size: str) -> Iterator[tuple[str, str, str]]:
        workload = BENCH_SIZES.get(size, REFERENCE)
        if own is None or own.url is None:
            yield (f"Cannot benchmark this machine: {own.missing if own else 'no API'}.", *render())
            return
        yield (
            f"Benchmarking this machine at {workload.label} through {own.url} (waits for a running job)...",
            *render(),
        )
        outcome = manager.benchmark_master(own.url, own.auth, workload)
        text = f"this machine: {outcome.cost.describe()}" if outcome.cost else f"this machine: failed: {outcome.error}"
        yield (f"{text}\nDone.", *render())

    def bench_selected(selected: str, size: str) -> Iterator[tuple[str, str, str]]:
        yield from benchmark(selected, size, False)

    def bench_everyone(selected: str, size: str) -> Iterator[tuple[str, str, str]]:
        yield from benchmark(selected, size, True)

    def save_options(*values: Any) -> tuple[str, str, str]:
        connect, probe, chunk_min, factor, no_worker, extra, slack, orchestrator = values
        try:
            options = FleetOptions(
                timeouts=Timeouts(
                    connect_s=connect, probe_s=probe, chunk_min_s=chunk_min, chunk_factor=factor, no_worker_s=no_worker
                ),
                extra_images=bool(extra),
                extra_slack=slack,
                orchestrator_only=bool(orchestrator),
            )
            manager.set_options(options)
            message = f"Options saved to {manager.path}."
        except (ConfigError, ValueError) as error:
            message = f"Options not saved: {error}"
        return (message, *render())

    options = manager.fleet.config.options
    with gr.Blocks(analytics_enabled=False) as tab, gr.Column(elem_id="distributed_root"):
        # the Column carries the id style.css is scoped under (a Blocks' own elem_id is not rendered in gradio 3)
        if startup_error:
            gr.HTML(f"<p class='distributed-error'>{_escape(startup_error)}</p>", elem_id="distributed_startup_error")
        table_html, chart_html = render()
        with gr.Row():
            table = gr.HTML(table_html, elem_id="distributed_status")
        refresh = gr.Button("Refresh", elem_id="distributed_refresh", variant="secondary")
        with gr.Row():
            with gr.Column(scale=3):
                selected = gr.Dropdown(
                    choices=_choices(manager), value=NEW, label="Worker", elem_id="distributed_selected"
                )
                with gr.Row():
                    name = gr.Textbox(label="Name", elem_id="distributed_name")
                    url = gr.Textbox(label="URL", placeholder="http://192.168.1.20:7860", elem_id="distributed_url")
                with gr.Row():
                    user = gr.Textbox(label="User (--api-auth)", elem_id="distributed_user")
                    password = gr.Textbox(
                        label="Password (empty keeps the stored one)", type="password", elem_id="distributed_password"
                    )
                    password_env = gr.Textbox(
                        label="...or password from env variable", elem_id="distributed_password_env"
                    )
                with gr.Row():
                    enabled = gr.Checkbox(value=True, label="Enabled", elem_id="distributed_enabled")
                    verify = gr.Dropdown(
                        choices=list(VERIFY), value=next(iter(VERIFY)), label="TLS", elem_id="distributed_verify"
                    )
                    max_batch = gr.Number(
                        value=0, precision=0, label="Max batch (0: no cap)", elem_id="distributed_max_batch"
                    )
                    max_pixels = gr.Number(
                        value=0,
                        precision=0,
                        label="Max pixels per request (0: no cap)",
                        elem_id="distributed_max_pixels",
                    )
                with gr.Row():
                    save_button = gr.Button("Save worker", variant="primary", elem_id="distributed_save")
                    remove_button = gr.Button("Remove", elem_id="distributed_remove")
                    enable_button = gr.Button("Enable", elem_id="distributed_enable")
                    disable_button = gr.Button("Disable", elem_id="distributed_disable")
                    test_button = gr.Button("Test connection", elem_id="distributed_test")
                with gr.Row():
                    size = gr.Dropdown(
                        choices=list(BENCH_SIZES),
                        value=next(iter(BENCH_SIZES)),
                        label="Benchmark at",
                        elem_id="distributed_bench_size",
                    )
                    bench_one = gr.Button("Benchmark worker", elem_id="distributed_bench_one")
                    bench_all = gr.Button("Benchmark all", elem_id="distributed_bench_all")
                    bench_self = gr.Button("Benchmark this machine", elem_id="distributed_bench_master")
                message = gr.Textbox(label="Result", lines=3, interactive=False, elem_id="distributed_message")
            with gr.Column(scale=2):
                chart = gr.HTML(chart_html, elem_id="distributed_chart")
                with gr.Accordion("Options", open=False, elem_id="distributed_options"):
                    t = options.timeouts
                    connect = gr.Number(value=t.connect_s, label="Connect timeout (s)")
                    probe = gr.Number(value=t.probe_s, label="Probe timeout (s)")
                    chunk_min = gr.Number(value=t.chunk_min_s, label="Shortest chunk deadline (s)")
                    factor = gr.Number(value=t.chunk_factor, label="Deadline factor (x predicted time)")
                    no_worker = gr.Number(value=t.no_worker_s, label="Wait for an offline worker (s)")
                    extra = gr.Checkbox(value=options.extra_images, label="Extra images for idle time (default)")
                    slack = gr.Slider(0, 1, value=options.extra_slack, step=0.05, label="Extra images slack")
                    orchestrator = gr.Checkbox(value=options.orchestrator_only, label="Orchestrator only (default)")
                    save_opts = gr.Button("Save options", elem_id="distributed_save_options")

        form = [name, url, user, password, password_env, enabled, verify, max_batch, max_pixels]
        changed = [message, table, chart, selected, *form]
        refresh.click(fn=render, inputs=[], outputs=[table, chart])
        tab.load(fn=render, inputs=[], outputs=[table, chart])  # a reloaded page shows the current fleet
        tab.load(fn=lambda: gr.update(choices=_choices(manager)), inputs=[], outputs=[selected])  # and offers it
        selected.change(fn=lambda s: _form_values(manager, s), inputs=[selected], outputs=form)
        save_button.click(fn=save, inputs=[selected, *form], outputs=changed)
        remove_button.click(fn=remove, inputs=[selected], outputs=changed)
        enable_button.click(fn=lambda s: set_enabled(s, True), inputs=[selected], outputs=changed)
        disable_button.click(fn=lambda s: set_enabled(s, False), inputs=[selected], outputs=changed)
        test_button.click(fn=test, inputs=[selected], outputs=[message, table, chart])
        bench_one.click(fn=bench_selected, inputs=[selected, size], outputs=[message, table, chart])
        bench_all.click(fn=bench_everyone, inputs=[selected, size], outputs=[message, table, chart])
        bench_self.click(fn=bench_master, inputs=[size], outputs=[message, table, chart])
        option_fields = [connect, probe, chunk_min, factor, no_worker, extra, slack, orchestrator]
        save_opts.click(fn=save_options, inputs=option_fields, outputs=[message, table, chart])
        tab.load(fn=lambda: _option_values(manager), inputs=[], outputs=option_fields)  # the saved values
    for block in tab.blocks.values():
        block.do_not_save_to_config = True  # A1111's ui-config.json would pin first-start values over the saved ones
    return tab


def _option_values(manager: FleetManager) -> tuple[Any, ...]:
    options = manager.fleet.config.options
    t = options.timeouts
    return (
        t.connect_s,
        t.probe_s,
        t.chunk_min_s,
        t.chunk_factor,
        t.no_worker_s,
        options.extra_images,
        options.extra_slack,
        options.orchestrator_only,
    )


def _escape(text: str) -> str:
    import html

    return html.escape(text)
