from collections import defaultdict
from typing import Any, Callable

callbacks: dict[str, list[Callable[..., Any]]] = defaultdict(list)


def clear_callbacks() -> None:
    callbacks.clear()


def on_app_started(callback: Callable[..., Any], *, name: Any = None) -> None:
    callbacks["app_started"].append(callback)


def on_ui_tabs(callback: Callable[..., Any], *, name: Any = None) -> None:
    callbacks["ui_tabs"].append(callback)


def on_script_unloaded(callback: Callable[..., Any], *, name: Any = None) -> None:
    callbacks["script_unloaded"].append(callback)
