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


def happens_within(qtbot, predicate, timeout_ms: int) -> bool:
    """Whether `predicate()` becomes true within `timeout_ms`, processing events meanwhile.

    For "nothing happens": `assert not happens_within(...)` returns as soon as it does happen,
    instead of sleeping the whole time and looking afterwards.
    """
    try:
        qtbot.waitUntil(predicate, timeout=timeout_ms)
    except qtbot.TimeoutError:
        return False
    return True
