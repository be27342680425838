"""Helpers for the GUI-A tests: wait for background loads, the core's exact count."""

from __future__ import annotations

from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig

LOAD_TIMEOUT_MS = 60_000


def wait_loaded(qtbot, window, timeout: int = LOAD_TIMEOUT_MS) -> None:
    """Until the model tree (and the data preview) have arrived from the background."""
    qtbot.waitUntil(lambda: window.tree is not None and not window.is_loading(),
                    timeout=timeout)


def open_model(qtbot, window, spec: str) -> None:
    window.open_model(spec)
    wait_loaded(qtbot, window)


def core_count(window) -> int:
    """The core's exact trainable count for what the window shows."""
    cfg: AdapterConfig = window.run_config().adapter
    return plan_adapter(window.tree, cfg).trainable_params
