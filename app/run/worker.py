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
from pathlib import Path
from typing import Any

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.process.child import ProcessSession, discard_spare, prestart
from graftlab.core.train.events import EventBatcher, Saving
from graftlab.core.train.lifecycle import Lifecycle, RunPhase
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
    """True when `cls` trains in this process (not a ProcessSession, not an attached run)."""
    return not (isinstance(cls, type) and (issubclass(cls, ProcessSession)
                                           or getattr(cls, "keeps_running", False)))


class _SessionSlot:
    """The run's session once the worker has built it, and the run's lifecycle as the GUI sees it.

    Shared by the runner (GUI thread) and the worker (its thread). Requests can arrive before
    the worker has built its session (while it still imports torch): the lifecycle's phase
    keeps them (pausing, stopping) and `attach` applies them the moment the session exists.
    Training events move the phase on the worker thread, before the GUI receives them, so when
    `Paused` reaches the GUI an export-while-paused is already allowed. This is a plain Python
    object, so the runner never calls into the worker QObject, whose C++ side Qt deletes when
    the thread ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.session: Any = None
        self.lifecycle = Lifecycle(RunPhase.STARTING)
        self.save = True  # a stop keeps the adapter (False once any stop asked to discard it)
        self._saving = False  # the session reported a checkpoint/adapter write in progress
        self.error: BaseException | None = None  # set by the worker before `failed`
        self.left = False  # the window stopped following a run that keeps running

    @property
    def phase(self) -> RunPhase:
        return self.lifecycle.phase

    def on_event(self, event: Any) -> None:
        """A session sink (worker thread)."""
        self.lifecycle.apply(event)
        self._saving = isinstance(event, Saving)

    @property
    def saving(self) -> bool:
        """True between a Saving event and the next event (the write is done then)."""
        return self._saving

    def attach(self, session: Any) -> bool:
        """Install the session and apply pending requests; False when a stop already came."""
        with self._lock:
            self.session = session
            if self.phase is RunPhase.STOPPING:
                return False
            if self.left:
                session.leave()
            if self.phase is RunPhase.PAUSING:
                session.request_pause()
            return True

    def detach(self, failed: bool) -> None:
        with self._lock:
            self.session = None
        self.lifecycle.end(failed)  # no-op when Finished or Failed already said so

    def leave(self) -> None:
        """Stop following a run that keeps running on its own (it is not stopped)."""
        with self._lock:
            self.left = True
            if self.session is not None:
                self.session.leave()

    def request_stop(self, save: bool) -> None:
        with self._lock:
            self.save = self.save and save
            self.lifecycle.request_stop()
            if self.session is not None:
                self.session.request_stop(self.save)

    def kill(self) -> None:
        """End a session that does not stop: its process is killed (sessions without `kill`,
        which train in this process, can only be asked to stop)."""
        with self._lock:
            session = self.session
            self.lifecycle.request_stop()
        if session is None:
            return
        if hasattr(session, "kill"):
            session.kill()
        else:
            session.request_stop(self.save)

    def request_pause(self) -> None:
        with self._lock:
            if self.lifecycle.request_pause() and self.session is not None:
                self.session.request_pause()

    def request_resume(self) -> None:
        with self._lock:
            if self.lifecycle.request_resume() and self.session is not None:
                self.session.request_resume()

    def paused_session(self) -> Any:
        """The session, while it is blocked in its pause (for a save); else a UserError."""
        with self._lock:
            if self.session is None or self.phase is not RunPhase.PAUSED:
                raise UserError("pause the run and wait until it has paused before exporting "
                                "its adapter mid-training.")
            return self.session


class TrainingWorker(QObject):
    """Runs one TrainingSession in the thread it was moved to."""

    events = Signal(object)  # list[Event], already batched (about ten a second at most)
    failed = Signal(str)  # a UserError's sentence, or a formatted traceback
    finished = Signal(object)  # RunResult, or None after a failure or an early stop

    def __init__(self, cfg: RunConfig, control: _SessionSlot,
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
            self._control.lifecycle.end(failed=True)  # before `failed` reaches the GUI
            self.failed.emit(exc.message)
        except Exception as exc:  # report every failure to the UI instead of losing it
            self._control.error = exc
            self._control.lifecycle.end(failed=True)
            self.failed.emit(traceback.format_exc())
        finally:
            self._control.detach(failed=self._control.error is not None)
            try:
                batcher.flush()
            finally:
                self.finished.emit(result)


class TrainingRunner(QObject):
    """Owns one worker + thread pair at a time; its signals fire on the GUI thread.

    The window does not use it directly: graftlab.app.run.run_controller.RunController owns
    it, adds export-while-paused and reports the run's phase.
    """

    events = Signal(object)  # list[Event]
    failed = Signal(str)
    finished = Signal(object)  # RunResult | None, emitted after the thread has fully stopped

    def __init__(self, parent: QObject | None = None, flush_interval_s: float = 0.1) -> None:
        super().__init__(parent)
        self._flush_interval_s = flush_interval_s
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None
        self._control: _SessionSlot | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._keep_spare = False
        self._keeps_running = False

    @property
    def keeps_running(self) -> bool:
        """The run in progress lives in its own process and outlives the window."""
        return self._thread is not None and self._keeps_running

    @property
    def last_error(self) -> BaseException | None:
        """The exception of the last failed run (a UserError carries `.field` for the form)."""
        return self._error

    def is_running(self) -> bool:
        return self._thread is not None

    def phase(self) -> RunPhase:
        """The run's phase; idle once its thread has ended (or before any run)."""
        return self._control.phase if self._control is not None else RunPhase.IDLE

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
        """A pause is asked for or in effect."""
        return self.phase() in (RunPhase.PAUSING, RunPhase.PAUSED)

    def is_saving(self) -> bool:
        """True while the run reports that it is writing a checkpoint or the adapter."""
        return self._control is not None and self._control.saving

    def paused_session(self) -> Any:
        """The session while it is blocked in its pause (UserError otherwise)."""
        if self._control is None:
            raise UserError("pause the run and wait until it has paused before exporting its "
                            "adapter mid-training.")
        return self._control.paused_session()

    def start(self, cfg: RunConfig, resume: bool = False, session_class: Any = None) -> None:
        """Run `cfg` in a new thread; `resume` continues the run in `cfg.training.output_dir`
        from its latest complete checkpoint. `session_class`: instead of the default (a
        training child), e.g. graftlab.core.process.attached.AttachedSession."""
        if self._thread is not None:
            raise RuntimeError("a training run is already in progress")
        cls = session_class or _session_class()
        self._keeps_running = bool(getattr(cls, "keeps_running", False))
        if _in_process(cls):
            # Collect garbage here, on the GUI thread. An in-process Trainer calls gc.collect()
            # in the worker (accelerate's free_memory at the end of a run); if dead windows or
            # dialogs are still in reference cycles then, their Qt objects would be destroyed
            # on the worker thread, which deadlocked against the GUI thread in the test suite.
            gc.collect()
        control = _SessionSlot()
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

    # Control requests go straight to the shared slot object: a queued slot on the worker
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

    def leave(self) -> None:
        """Stop following a run that keeps running (see `keeps_running`); it goes on."""
        if self._control is not None:
            self._control.leave()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop (saving the adapter) and join, e.g. from closeEvent. A run that keeps running
        is left, not stopped.

        Returns False when the step in flight is still running after `timeout_ms`; the caller
        then waits for `finished` instead of destroying the runner (never `terminate()`).
        """
        if self._thread is None:
            return True
        if self._keeps_running:
            self.leave()
        else:
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
        if self._keep_spare:
            prestart()  # for the next run
        self.finished.emit(self._result)
