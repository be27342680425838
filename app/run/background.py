"""Short background calls off the GUI thread, on superqt's thread workers.

`BackgroundJobs` runs keyed jobs (building a module tree, tokenising a data preview): a newer
job of the same key makes the older one's result stale, and a stale result is dropped instead
of overwriting newer state. `BackgroundCall` runs one call at a time (an export, an adapter
read) and says when it is done. A worker's signals are connected to signals of these QObjects,
so results arrive on the GUI thread (a plain callable connected to a worker's signal would run
on the worker thread under PySide6), and a result for an object Qt has deleted is dropped.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot
from superqt.utils import create_worker


def _traced(fn: Callable[..., Any], done: threading.Event | None, *args: Any,
            **kwargs: Any) -> Any:
    """Call `fn` in the worker thread; a failure keeps its formatted traceback for the GUI."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        exc.formatted_traceback = traceback.format_exc()  # type: ignore[attr-defined]
        raise
    finally:
        if done is not None:
            done.set()


def _keyed(job_id: int, fn: Callable[[], Any]) -> tuple[int, Any]:
    """`fn()` with its job id attached to the result or to the exception."""
    try:
        return job_id, _traced(fn, None)
    except Exception as exc:
        exc.job_id = job_id  # type: ignore[attr-defined]
        raise


class BackgroundJobs(QObject):
    """Run callables in the background; `busy_changed(bool)` drives a busy indicator."""

    busy_changed = Signal(bool)
    _returned = Signal(object)  # (job id, result), from a worker thread
    _errored = Signal(object)  # the exception, with `job_id`

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._returned.connect(self._on_done)
        self._errored.connect(self._on_failed)
        self._ids = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._pending: dict[int, tuple[str, Callable[[Any], None], Callable[..., None]]] = {}
        self._workers: dict[int, Any] = {}  # keeps each superqt worker alive while it runs

    def submit(self, key: str, fn: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException, str], None]) -> int:
        """Run `fn()` in the background; then `on_done(result)` or `on_error(exc, tb)`."""
        job_id = next(self._ids)
        self._latest[key] = job_id
        was_busy = bool(self._pending)
        self._pending[job_id] = (key, on_done, on_error)
        worker = create_worker(_keyed, job_id, fn, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        self._workers[job_id] = worker
        worker.start()
        if not was_busy:
            self.busy_changed.emit(True)
        return job_id

    def is_busy(self, key: str | None = None) -> bool:
        if key is None:
            return bool(self._pending)
        return any(k == key for k, _, _ in self._pending.values())

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until the background threads are idle (closing the window). False on timeout."""
        return QThreadPool.globalInstance().waitForDone(timeout_ms)

    def _take(self, job_id: int) -> tuple[bool, Callable[[Any], None], Callable[..., None]]:
        self._workers.pop(job_id, None)
        key, on_done, on_error = self._pending.pop(job_id)
        current = self._latest.get(key) == job_id
        if current:
            del self._latest[key]
        if not self._pending:
            self.busy_changed.emit(False)
        return current, on_done, on_error

    @Slot(object)
    def _on_done(self, outcome: tuple[int, Any]) -> None:
        job_id, result = outcome
        current, on_done, _ = self._take(job_id)
        if current:
            on_done(result)

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        current, _, on_error = self._take(exc.job_id)  # type: ignore[attr-defined]
        if current:
            on_error(exc, getattr(exc, "formatted_traceback", ""))


class BackgroundCall(QObject):
    """Runs one blocking call at a time (an export, an adapter read) off the GUI thread.

    `succeeded(result)` or `failed(exception)` is emitted on the GUI thread, then `finished()`.
    A failed call's exception has `formatted_traceback`.
    """

    succeeded = Signal(object)
    failed = Signal(object)
    finished = Signal()
    _returned = Signal(object)  # from the worker thread
    _errored = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._returned.connect(self._on_returned)
        self._errored.connect(self._on_errored)
        self._worker: Any = None
        self._done = threading.Event()
        self._done.set()

    def is_running(self) -> bool:
        return self._worker is not None

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._worker is not None:
            raise RuntimeError("a background call is already running")
        self._done.clear()
        worker = create_worker(_traced, fn, self._done, *args, _start_thread=False,
                               _ignore_errors=True, **kwargs)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._errored)
        self._worker = worker
        worker.start()

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Wait for the call to return (a call cannot be interrupted; closing waits for it)."""
        return self._done.wait(None if timeout_ms < 0 else timeout_ms / 1000)

    @Slot(object)
    def _on_returned(self, result: Any) -> None:
        self._worker = None
        self.succeeded.emit(result)
        self.finished.emit()

    @Slot(object)
    def _on_errored(self, exc: Any) -> None:
        self._worker = None
        self.failed.emit(exc)
        self.finished.emit()
