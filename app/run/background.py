"""Short background jobs (building a module tree, tokenising a data preview) off the GUI thread.

Each job runs on a private QThreadPool. Its result comes back through a QObject signal whose
receiver lives on the GUI thread, so the callbacks run on the GUI thread (a worker-thread signal
runs a plain function or lambda on the worker thread; only a QObject slot runs on the GUI thread).
Jobs are keyed: a newer job of the same key makes the older one's result stale, and a stale result
is dropped instead of overwriting newer state.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


class _JobSignals(QObject):
    done = Signal(int, object)
    failed = Signal(int, object, str)


class _Job(QRunnable):
    def __init__(self, job_id: int, fn: Callable[[], Any], signals: _JobSignals) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._id, self._fn, self._signals = job_id, fn, signals

    def run(self) -> None:
        try:
            result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the GUI
            self._signals.failed.emit(self._id, exc, traceback.format_exc())
        else:
            self._signals.done.emit(self._id, result)


class BackgroundJobs(QObject):
    """Run callables in the background; `busy_changed(bool)` drives a busy indicator."""

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._signals = _JobSignals(self)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._ids = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._pending: dict[int, tuple[str, Callable[[Any], None], Callable[..., None]]] = {}

    def submit(self, key: str, fn: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException, str], None]) -> int:
        """Run `fn()` in the background; then `on_done(result)` or `on_error(exc, tb)`."""
        job_id = next(self._ids)
        self._latest[key] = job_id
        was_busy = bool(self._pending)
        self._pending[job_id] = (key, on_done, on_error)
        self._pool.start(_Job(job_id, fn, self._signals))
        if not was_busy:
            self.busy_changed.emit(True)
        return job_id

    def is_busy(self, key: str | None = None) -> bool:
        if key is None:
            return bool(self._pending)
        return any(k == key for k, _, _ in self._pending.values())

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every job has finished (closing the window). False on timeout."""
        return self._pool.waitForDone(timeout_ms)

    def _take(self, job_id: int) -> tuple[bool, Callable[[Any], None], Callable[..., None]]:
        key, on_done, on_error = self._pending.pop(job_id)
        current = self._latest.get(key) == job_id
        if current:
            del self._latest[key]
        if not self._pending:
            self.busy_changed.emit(False)
        return current, on_done, on_error

    @Slot(int, object)
    def _on_done(self, job_id: int, result: Any) -> None:
        current, on_done, _ = self._take(job_id)
        if current:
            on_done(result)

    @Slot(int, object, str)
    def _on_failed(self, job_id: int, exc: BaseException, tb: str) -> None:
        current, _, on_error = self._take(job_id)
        if current:
            on_error(exc, tb)
