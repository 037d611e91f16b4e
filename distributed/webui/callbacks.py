"""Webui callbacks, registered at module level by scripts/distributed.py (load_scripts clears them each reload)."""

from __future__ import annotations

import logging
from typing import Any

from modules import script_callbacks

from distributed.webui.runtime import close_runtime, runtime

logger = logging.getLogger("distributed")


def on_app_started(demo: Any, app: Any) -> None:
    from modules import shared

    from distributed.webui.routes import add_routes
    from distributed.webui.runtime import own_api

    add_routes(app, runtime().manager, runtime().flags.api_auth, own_api(shared.cmd_opts))
    runtime().manager.prober.start()  # every worker checked in the background: no call while the UI is built


def on_ui_tabs() -> list[tuple[Any, str, str]]:
    from modules import shared

    from distributed.webui.runtime import own_api
    from distributed.webui.tab import build_tab

    state = runtime()
    return [(build_tab(state.manager, state.error, own_api(shared.cmd_opts)), "Distributed", "distributed_tab")]


def on_script_unloaded() -> None:
    close_runtime()


def register() -> None:
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_ui_tabs(on_ui_tabs)
    script_callbacks.on_script_unloaded(on_script_unloaded)
