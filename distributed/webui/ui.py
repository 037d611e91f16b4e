"""The "Distributed" accordion under txt2img and img2img. Built from what is on disk: no network call here."""

from __future__ import annotations

from typing import Any

import gradio as gr

from distributed.config import FleetOptions


def accordion(is_img2img: bool, workers: list[str], options: FleetOptions) -> list[Any]:
    from modules.ui_components import InputAccordion

    tab = "img2img" if is_img2img else "txt2img"
    with InputAccordion(bool(workers), label="Distributed", elem_id=f"distributed_{tab}") as enabled:
        with gr.Row():
            # none ticked means every enabled worker, also those added after this UI was built (and for API calls,
            # which get these defaults)
            chosen = gr.CheckboxGroup(
                choices=workers,
                value=[],
                label="Only these workers (none ticked: every enabled worker)",
                elem_id=f"distributed_{tab}_workers",
            )
        with gr.Row():
            orchestrator = gr.Checkbox(
                value=options.orchestrator_only,
                label="Orchestrator only (this machine renders nothing)",
                elem_id=f"distributed_{tab}_orchestrator_only",
            )
            extra = gr.Checkbox(
                value=options.extra_images,
                label="Extra images for idle time",
                elem_id=f"distributed_{tab}_extra_images",
            )
    return [enabled, chosen, orchestrator, extra]
