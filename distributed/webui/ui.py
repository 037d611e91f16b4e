"""The "Distributed" accordion under txt2img and img2img. Built from what is on disk: no network call here.

Its defaults mean "as saved": on, every enabled worker, and the master's part and extra images as the tab's options
say when the job runs. API calls get these defaults too (A1111 computes them once, at start), so a setting changed
later in the tab or through REST applies to the next job. None of its values goes into ui-config.json.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

AS_SAVED = "as in the Distributed tab"
MASTER_CHOICES = (AS_SAVED, "renders its share", "orchestrates only")
EXTRA_CHOICES = (AS_SAVED, "on", "off")


def accordion(is_img2img: bool, workers: list[str]) -> list[Any]:
    from modules.ui_components import InputAccordion

    tab = "img2img" if is_img2img else "txt2img"
    with InputAccordion(True, label="Distributed", elem_id=f"distributed_{tab}") as enabled:
        with gr.Row():
            # none ticked means every enabled worker, also those added after this UI was built
            chosen = gr.CheckboxGroup(
                choices=workers,
                value=[],
                label="Only these workers (none ticked: every enabled worker)",
                elem_id=f"distributed_{tab}_workers",
            )
        with gr.Row():
            master = gr.Dropdown(
                choices=list(MASTER_CHOICES),
                value=AS_SAVED,
                label="This machine",
                elem_id=f"distributed_{tab}_orchestrator_only",
            )
            extra = gr.Dropdown(
                choices=list(EXTRA_CHOICES),
                value=AS_SAVED,
                label="Extra images for idle time",
                elem_id=f"distributed_{tab}_extra_images",
            )
    controls = [enabled, chosen, master, extra]
    for control in controls:
        control.do_not_save_to_config = True  # A1111 would pin first-start values in ui-config.json
    return controls


def choice_value(value: Any, saved: bool, yes: str) -> bool:
    """A dropdown's value (or a bool from an API client) as on/off, AS_SAVED meaning the saved option."""
    if isinstance(value, bool):
        return value
    if value in (None, "", AS_SAVED):
        return saved
    return str(value) == yes
