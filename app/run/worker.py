"""Background work: a core training session (or any blocking call) in a dedicated QThread.

This is the only module that touches QThread. A worker QObject is moved to its own
thread; the GUI connects only to the *runner's* signals, which are delivered on the GUI thread.

The worker runs `graftlab.core.process.child.ProcessSession`: the training itself happens in a child
process and the worker thread only reads its event stream. Training in a thread of this process
would stall the window, because the training loop's Python holds the GIL
(`tests/bench/bench_ui_stall.py` measures it). A session class with the same interface can be put in
`TrainingSession` below (the tests run scripted fakes and in-process sessions that way).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.process.child import ProcessSession, discard_spare, prestart
from graftlab.core.train.events import EventBatcher, Failed, Finished, Paused, Resumed
from PySide6.QtCore import QObject, QThread, Signal, Slot

# The session class a run uses. Tests monkeypatch this name with a fake or an in-process
# session class; None means graftlab.core.process.child.ProcessSession (training in a child
# process).
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
    return TrainingSession if TrainingSession is not None else ProcessSession


def _in_process(cls: Any) -> bool:
    """True when `cls` trains in this process (not a ProcessSession)."""
    return not (isinstance(cls, type) and issubclass(cls, ProcessSession))


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
        self._at_pause_point = False  # the training thread is blocked in its pause
        self._snapshots = 0  # adapter snapshots in flight (they hold back a resume)
        self._resume_after_snapshot = False
        self.error: BaseException | None = None  # set by the worker before `failed`

    def on_event(self, event: Any) -> None:
        """A session sink (worker thread): tracks whether training is blocked in its pause.

        `session.paused` turns true as soon as a pause is *requested*, while the step in
        flight still updates the weights; `Paused` is emitted right before the thread blocks.
        """
        with self._lock:
            if isinstance(event, Paused):
                self._at_pause_point = True
            elif isinstance(event, Resumed | Finished | Failed):
                self._at_pause_point = False

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
            self._at_pause_point = False

    def request_stop(self, save: bool) -> None:
        with self._lock:
            self._stop_save = save if self._stop_save is None else self._stop_save and save
            if self._session is not None:
                self._session.request_stop(save)

    def kill(self) -> None:
        """End a session that does not stop: its process is killed (sessions without `kill`,
        which train in this process, can only be asked to stop)."""
        with self._lock:
            session = self._session
            if self._stop_save is None:
                self._stop_save = True
        if session is None:
            return
        if hasattr(session, "kill"):
            session.kill()
        else:
            session.request_stop(True)

    def request_pause(self) -> None:
        with self._lock:
            self._pause = True
            if self._session is not None:
                self._session.request_pause()

    def request_resume(self) -> None:
        with self._lock:
            self._pause = False
            if self._snapshots:  # never let training change the weights under a save
                self._resume_after_snapshot = True
            elif self._session is not None:
                self._session.request_resume()

    @property
    def can_snapshot(self) -> bool:
        with self._lock:
            return (self._session is not None and self._at_pause_point
                    and bool(self._session.paused))

    def begin_snapshot(self) -> Any:
        """Claim the paused session for a save (GUI thread, before the save is started), so a
        resume requested from now on waits for `end_snapshot`. Only while blocked in a pause."""
        with self._lock:
            session = self._session
            if session is None or not self._at_pause_point or not session.paused:
                raise UserError("pause the run and wait until it has paused before exporting "
                                "its adapter mid-training.")
            self._snapshots += 1
            return session

    def snapshot(self, session: Any, out_dir: str | Path) -> Any:
        """Save the claimed session's adapter as it is now (any thread), then release it."""
        try:
            return session.snapshot_adapter(out_dir)
        finally:
            self.end_snapshot()

    def end_snapshot(self) -> None:
        with self._lock:
            self._snapshots -= 1
            if not self._snapshots and self._resume_after_snapshot:
                self._resume_after_snapshot = False
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
                 flush_interval_s: float = 0.1, resume: bool = False,
                 session_class: Any = None) -> None:
        super().__init__()
        self._cfg, self._control, self._flush_interval_s = cfg, control, flush_interval_s
        self._resume = resume
        self._session_class = session_class or _session_class()

    @Slot()
    def run(self) -> None:
        batcher = EventBatcher(self.events.emit, self._flush_interval_s)
        result: Any = None
        try:
            cls = self._session_class
            if _in_process(cls):
                preload_native_libraries()  # torch is imported in this thread, not the GUI's
            # control first: when `Paused` reaches the GUI, a snapshot is already allowed
            sinks = [self._control.on_event, batcher]
            # `resume` only when asked, so session classes without it (test fakes) still work
            session = cls(self._cfg, sinks, resume=True) if self._resume else cls(self._cfg, sinks)
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
    snapshot_saved = Signal(object)  # [(path, size)] of an adapter exported while paused
    snapshot_failed = Signal(object)  # the exception (a UserError carries the sentence)

    def __init__(self, parent: QObject | None = None, flush_interval_s: float = 0.1) -> None:
        super().__init__(parent)
        self._flush_interval_s = flush_interval_s
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._control: _SessionControl | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._keep_spare = False
        self._snapshot_call = BackgroundCall(self)
        self._snapshot_call.succeeded.connect(self.snapshot_saved)
        self._snapshot_call.failed.connect(self.snapshot_failed)

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the last failed run (a UserError carries `.field` for the form)."""
        return self._error

    def is_running(self) -> bool:
        return self._thread is not None

    def keep_spare_process(self, enabled: bool = True) -> None:
        """Keep a training process started in advance (torch already imported), so Start
        begins training seconds sooner; a new spare is started after every run. Off when the
        environment sets GRAFTLAB_PRESTART=0, and for in-process session classes."""
        self._keep_spare = enabled and os.environ.get("GRAFTLAB_PRESTART", "1") != "0" \
            and not _in_process(_session_class())
        if self._keep_spare and self._thread is None:
            prestart()
        elif not self._keep_spare:
            discard_spare()

    def is_paused(self) -> bool:
        return self._control is not None and self._control.paused

    def can_snapshot(self) -> bool:
        """True while the training thread is blocked in a pause (and no snapshot is saving)."""
        return (self._control is not None and self._control.can_snapshot
                and not self._snapshot_call.is_running())

    def is_snapshotting(self) -> bool:
        return self._snapshot_call.is_running()

    def snapshot_adapter(self, out_dir: str | Path) -> None:
        """Export the adapter as it is now, off the GUI thread; only while paused.

        The save reads the weights in a BackgroundCall while the training thread is blocked in
        its pause; a resume requested meanwhile waits until the save is done. The result comes
        as `snapshot_saved(files)` or `snapshot_failed(exception)`.
        """
        if self._control is None or not self._control.can_snapshot:
            raise UserError("pause the run and wait until it has paused before exporting its "
                            "adapter mid-training.")
        if self._snapshot_call.is_running():
            raise UserError("an export of the current adapter is already being written; wait "
                            "for it to finish.")
        control = self._control
        session = control.begin_snapshot()
        try:
            self._snapshot_call.start(control.snapshot, session, str(out_dir))
        except BaseException:
            control.end_snapshot()
            raise

    def start(self, cfg: RunConfig, resume: bool = False) -> None:
        """Run `cfg` in a new thread; `resume` continues the run in `cfg.training.output_dir`
        from its latest complete checkpoint."""
        if self._thread is not None:
            raise RuntimeError("a training run is already in progress")
        cls = _session_class()
        if _in_process(cls):
            # Collect garbage here, on the GUI thread. An in-process Trainer calls gc.collect()
            # in the worker (accelerate's free_memory at the end of a run); if dead windows or
            # dialogs are still in reference cycles then, their Qt objects would be destroyed
            # on the worker thread, which deadlocked against the GUI thread in the test suite.
            gc.collect()
        control = _SessionControl()
        thread, worker = QThread(self), TrainingWorker(cfg, control, self._flush_interval_s,
                                                       resume, cls)
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

    def kill(self) -> None:
        """End the run now, for one that does not stop (see ProcessSession.kill); the run
        ends with `failed` (the sentence says what was kept) and then `finished`."""
        if self._control is not None:
            self._control.kill()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop (saving the adapter) and join, e.g. from closeEvent.

        Returns False when the step in flight is still running after `timeout_ms`; the caller
        then waits for `finished` instead of destroying the runner (never `terminate()`).
        """
        if self._thread is None:
            return self._snapshot_call.wait(timeout_ms)
        self.stop(save=True)
        self._thread.quit()
        return self._thread.wait(timeout_ms) and self._snapshot_call.wait(timeout_ms)

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
        if self._keep_spare:
            prestart()  # for the next run
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
