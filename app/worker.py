"""Background work: a core training session (or any blocking call) in a dedicated QThread.

This is the only module that touches QThread (STYLE.md §2). A worker QObject is moved to its own
thread; the GUI connects only to the *runner's* signals, which are delivered on the GUI thread.
Heavy imports (torch, transformers, peft) and model loading happen inside the worker thread,
never in the GUI thread, so the window stays responsive while a run sets up.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from core.config import RunConfig
from core.errors import UserError
from core.events import EventBatcher

# Resolved lazily in the worker thread (`_session_class`). Tests monkeypatch this name with a
# fake session class; None means "import core.session.TrainingSession when a run starts".
TrainingSession: Any = None


def preload_native_libraries() -> None:
    """Load torch's shared libraries with the GIL released, before `import torch`.

    CPython 3.11 holds the GIL while an import dlopen()s an extension, and libtorch_cpu's static
    initialisers take about a second: the GUI thread would freeze for all of it. Calling libc's
    dlopen through ctypes releases the GIL for the call, so the later `import torch` finds the
    libraries already loaded. Best effort: any failure leaves the normal import path to do it.
    """
    if "torch" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return
        lib = Path(spec.origin).parent / "lib" / "libtorch_python.so"
        if not lib.is_file():
            return
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
        dlopen.argtypes, dlopen.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_void_p
        dlopen(os.fsencode(lib), os.RTLD_NOW | os.RTLD_LOCAL)  # NULL on failure: ignored
    except (OSError, AttributeError, ValueError, ImportError):
        pass


def _session_class() -> Any:
    if TrainingSession is not None:
        return TrainingSession
    import core.session

    return core.session.TrainingSession


class _SessionControl:
    """Stop/pause requests shared by the runner (GUI thread) and the worker (its thread).

    Requests can arrive before the worker has built its session (while it still imports torch);
    they are kept here and applied the moment the session exists. This is a plain Python object,
    so the runner never calls into the worker QObject, whose C++ side Qt deletes when the thread
    ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._stop_save: bool | None = None  # None: no stop requested
        self._pause = False
        self.error: BaseException | None = None  # set by the worker before `failed`

    def attach(self, session: Any) -> bool:
        """Install the session and apply pending requests; False when a stop already came."""
        with self._lock:
            self._session = session
            if self._stop_save is not None:
                return False
            if self._pause:
                session.request_pause()
            return True

    def detach(self) -> None:
        with self._lock:
            self._session = None

    def request_stop(self, save: bool) -> None:
        with self._lock:
            self._stop_save = save if self._stop_save is None else self._stop_save and save
            if self._session is not None:
                self._session.request_stop(save)

    def request_pause(self) -> None:
        with self._lock:
            self._pause = True
            if self._session is not None:
                self._session.request_pause()

    def request_resume(self) -> None:
        with self._lock:
            self._pause = False
            if self._session is not None:
                self._session.request_resume()

    @property
    def paused(self) -> bool:
        with self._lock:
            if self._session is not None:
                return bool(self._session.paused)
            return self._pause and self._stop_save is None


class TrainingWorker(QObject):
    """Runs one TrainingSession in the thread it was moved to."""

    events = Signal(object)  # list[Event], already batched (about ten a second at most)
    failed = Signal(str)  # a UserError's sentence, or a formatted traceback
    finished = Signal(object)  # RunResult, or None after a failure or an early stop

    def __init__(self, cfg: RunConfig, control: _SessionControl,
                 flush_interval_s: float = 0.1) -> None:
        super().__init__()
        self._cfg, self._control, self._flush_interval_s = cfg, control, flush_interval_s

    @Slot()
    def run(self) -> None:
        batcher = EventBatcher(self.events.emit, self._flush_interval_s)
        result: Any = None
        try:
            preload_native_libraries()
            session = _session_class()(self._cfg, [batcher])  # imports torch in this thread
            if self._control.attach(session):
                result = session.run()
        except UserError as exc:  # bad input: one sentence for the user, no traceback
            self._control.error = exc
            self.failed.emit(exc.message)
        except Exception as exc:  # report every failure to the UI instead of losing it
            self._control.error = exc
            self.failed.emit(traceback.format_exc())
        finally:
            self._control.detach()
            try:
                batcher.flush()
            finally:
                self.finished.emit(result)


class TrainingRunner(QObject):
    """Owns one worker + thread pair at a time; its signals fire on the GUI thread."""

    events = Signal(object)  # list[Event]
    failed = Signal(str)
    finished = Signal(object)  # RunResult | None, emitted after the thread has fully stopped

    def __init__(self, parent: QObject | None = None, flush_interval_s: float = 0.1) -> None:
        super().__init__(parent)
        self._flush_interval_s = flush_interval_s
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._control: _SessionControl | None = None
        self._result: Any = None
        self._error: BaseException | None = None

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the last failed run (a UserError carries `.field` for the form)."""
        return self._error

    def is_running(self) -> bool:
        return self._thread is not None

    def is_paused(self) -> bool:
        return self._control is not None and self._control.paused

    def start(self, cfg: RunConfig) -> None:
        if self._thread is not None:
            raise RuntimeError("a training run is already in progress")
        control = _SessionControl()
        thread, worker = QThread(self), TrainingWorker(cfg, control, self._flush_interval_s)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.events.connect(self.events)  # signal-to-signal, queued to our thread
        worker.failed.connect(self._on_worker_failed)
        worker.finished.connect(self._on_worker_finished)
        worker.finished.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        thread.finished.connect(worker.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self._thread, self._worker, self._control = thread, worker, control
        self._result = self._error = None
        thread.start()

    # Control requests go straight to the shared control object: a queued slot on the worker
    # would only run after `run()` returns.
    def pause(self) -> None:
        if self._control is not None:
            self._control.request_pause()

    def resume(self) -> None:
        if self._control is not None:
            self._control.request_resume()

    def stop(self, save: bool = True) -> None:
        if self._control is not None:
            self._control.request_stop(save)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop (saving the adapter) and join, e.g. from closeEvent.

        Returns False when the step in flight is still running after `timeout_ms`; the caller
        then waits for `finished` instead of destroying the runner (never `terminate()`).
        """
        if self._thread is None:
            return True
        self.stop(save=True)
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    @Slot(str)
    def _on_worker_failed(self, message: str) -> None:
        if self._control is not None:
            self._error = self._control.error
        self.failed.emit(message)

    @Slot(object)
    def _on_worker_finished(self, result: Any) -> None:
        self._result = result

    @Slot()
    def _on_thread_finished(self) -> None:
        if self._thread is not None:
            self._thread.wait()  # `finished` fires just before the thread really exits
        self._thread = self._worker = self._control = None
        self.finished.emit(self._result)


class _CallWorker(QObject):
    done = Signal(object, object)  # (result, exception or None)

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        super().__init__()
        self._fn, self._args, self._kwargs = fn, args, kwargs

    @Slot()
    def run(self) -> None:
        try:
            result, error = self._fn(*self._args, **self._kwargs), None
        except Exception as exc:  # handed to the GUI thread, never raised in this thread
            exc.formatted_traceback = traceback.format_exc()  # type: ignore[attr-defined]
            result, error = None, exc
        self.done.emit(result, error)


class BackgroundCall(QObject):
    """Runs one blocking call (an export, a model load) in its own QThread.

    `succeeded(result)` or `failed(exception)` is emitted on the GUI thread once the thread has
    fully stopped, then `finished()`. A failed call's exception has `formatted_traceback`.
    """

    succeeded = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: _CallWorker | None = None  # Python owns it: keep it alive while it runs
        self._outcome: tuple[Any, BaseException | None] = (None, None)

    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self._thread is not None:
            raise RuntimeError("a background call is already running")
        thread, worker = QThread(self), _CallWorker(fn, args, kwargs)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.done.connect(self._on_worker_done)
        worker.done.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        thread.finished.connect(worker.deleteLater)
        thread.finished.connect(thread.deleteLater)
        self._thread, self._worker, self._outcome = thread, worker, (None, None)
        thread.start()

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Join the thread (a call cannot be interrupted; closing waits for it)."""
        return self._thread is None or self._thread.wait(timeout_ms)

    @Slot(object, object)
    def _on_worker_done(self, result: Any, error: Any) -> None:
        self._outcome = (result, error)

    @Slot()
    def _on_thread_finished(self) -> None:
        if self._thread is not None:
            self._thread.wait()
        self._thread = self._worker = None
        result, error = self._outcome
        self._outcome = (None, None)
        if error is None:
            self.succeeded.emit(result)
        else:
            self.failed.emit(error)
        self.finished.emit()
