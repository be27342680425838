"""The one object the window and the panels talk to about a run.

`RunController` owns the training runner (a worker thread that drives the child process) and
the export-while-paused call. It starts, pauses, resumes and stops the run and reports the
run's phase (graftlab.core.train.lifecycle.RunPhase, the same lifecycle the training session
and the child's parent keep) through `phase_changed`; panels set their buttons from that signal
and never keep a run state of their own.

Export while paused: the save reads the weights in a background call while the training thread
is blocked in its pause; a resume asked for meanwhile is held back until the save is done, so
training never changes the weights under a save.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftlab.app.run.background import BackgroundCall
from graftlab.app.run.worker import TrainingRunner
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.lifecycle import RunPhase
from PySide6.QtCore import QObject, Signal, Slot

NOT_PAUSED = ("pause the run and wait until it has paused before exporting its adapter "
              "mid-training.")


class RunController(QObject):
    """Start, pause, resume, stop and export-while-paused for one run at a time."""

    events = Signal(object)  # list[Event], batched (about ten a second at most)
    failed = Signal(str)  # a UserError's sentence, or a formatted traceback
    finished = Signal(object)  # RunResult | None, once the run's thread has fully stopped
    phase_changed = Signal(object)  # RunPhase
    snapshot_saved = Signal(object)  # [(path, size)] of an adapter exported while paused
    snapshot_failed = Signal(object)  # the exception (a UserError carries the sentence)
    snapshot_done = Signal()  # after snapshot_saved or snapshot_failed

    def __init__(self, parent: QObject | None = None, flush_interval_s: float = 0.1) -> None:
        super().__init__(parent)
        self._runner = TrainingRunner(self, flush_interval_s)
        self._snapshot_call = BackgroundCall(self)
        self._resume_after_snapshot = False
        self._shown = RunPhase.IDLE
        self._runner.events.connect(self._on_runner_events)
        self._runner.failed.connect(self._on_runner_failed)
        self._runner.finished.connect(self._on_runner_finished)
        self._snapshot_call.succeeded.connect(self._on_snapshot_saved)
        self._snapshot_call.failed.connect(self._on_snapshot_failed)

    # ---- questions --------------------------------------------------------------------------
    def phase(self) -> RunPhase:
        return self._runner.phase()

    def is_running(self) -> bool:
        """A run's thread exists (from Start until `finished`)."""
        return self._runner.is_running()

    def is_paused(self) -> bool:
        return self.phase() in (RunPhase.PAUSING, RunPhase.PAUSED)

    @property
    def last_error(self) -> BaseException | None:
        return self._runner.last_error

    def can_snapshot(self) -> bool:
        """True while the training thread is blocked in a pause and no snapshot is saving."""
        return self.phase() is RunPhase.PAUSED and not self._snapshot_call.is_running()

    def is_snapshotting(self) -> bool:
        return self._snapshot_call.is_running()

    def is_saving(self) -> bool:
        """The run reports that it is writing a checkpoint or the adapter (never kill then)."""
        return self._runner.is_saving()

    # ---- requests ---------------------------------------------------------------------------
    def keeps_running(self) -> bool:
        """The run in progress lives on its own and outlives the window."""
        return self._runner.keeps_running

    def start(self, cfg: RunConfig, resume: bool = False, keep_running: bool = False) -> None:
        """Run `cfg` (`resume`: continue its run folder from the latest checkpoint);
        `keep_running`: as a detached run that goes on when the window closes."""
        from graftlab.core.process.attached import AttachedSession, ProcessesSession

        session = AttachedSession if keep_running else (
            ProcessesSession if cfg.training.processes > 1 else None)  # torchrun's rank 0
        self._runner.start(cfg, resume, session)
        self._resume_after_snapshot = False
        self._announce_starting()

    def attach(self, run_dir: str | Path) -> RunConfig:
        """Follow the run training in `run_dir` now (plots from its metrics.jsonl, then live;
        pause and stop work); returns its run.yaml."""
        from graftlab.core.process.attached import ReattachedSession

        cfg = RunConfig.load(Path(run_dir) / "run.yaml")
        cfg.training.output_dir = str(run_dir)
        self._runner.start(cfg, False, ReattachedSession)
        self._resume_after_snapshot = False
        self._announce_starting()
        return cfg

    def leave(self) -> None:
        """Stop following a run that keeps running; it goes on without the window."""
        self._runner.leave()

    @Slot()
    def pause(self) -> None:
        self._runner.pause()
        self._sync_phase()

    @Slot()
    def resume(self) -> None:
        if self._snapshot_call.is_running():
            self._resume_after_snapshot = True  # never let training change the weights mid-save
            return
        self._runner.resume()
        self._sync_phase()

    @Slot()
    def toggle_pause(self) -> None:
        if self.is_paused():
            self.resume()
        elif self.is_running():
            self.pause()

    def stop(self, save: bool = True) -> None:
        self._resume_after_snapshot = False
        self._runner.stop(save)
        self._sync_phase()

    def kill(self) -> None:
        """End a run that does not stop when asked (its process is killed)."""
        self._runner.kill()
        self._sync_phase()

    def keep_spare_process(self, enabled: bool = True) -> None:
        self._runner.keep_spare_process(enabled)

    def snapshot_adapter(self, out_dir: str | Path) -> None:
        """Export the adapter as it is now, off the GUI thread; only while paused.

        The result comes as `snapshot_saved(files)` or `snapshot_failed(exception)`.
        """
        if self._snapshot_call.is_running():
            raise UserError("an export of the current adapter is already being written; wait "
                            "for it to finish.")
        if self.phase() is not RunPhase.PAUSED:
            raise UserError(NOT_PAUSED)
        session = self._runner.paused_session()
        self._snapshot_call.start(session.snapshot_adapter, str(out_dir))

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Stop (saving the adapter) and join, e.g. from closeEvent; False: still stopping."""
        joined = self._runner.shutdown(timeout_ms)
        return self._snapshot_call.wait(timeout_ms) and joined

    # ---- runner and snapshot signals ----------------------------------------------------------
    def _announce_starting(self) -> None:
        # Panels always see STARTING first, even when the worker thread has already moved the
        # lifecycle on (a fast session can be running before start() returns).
        self._shown = RunPhase.STARTING
        self.phase_changed.emit(RunPhase.STARTING)
        self._sync_phase()

    def _sync_phase(self) -> None:
        phase = self.phase()
        if phase is not self._shown:
            self._shown = phase
            self.phase_changed.emit(phase)

    @Slot(object)
    def _on_runner_events(self, batch: list[Any]) -> None:
        self._sync_phase()  # moved on the worker thread before the batch was sent
        self.events.emit(batch)

    @Slot(str)
    def _on_runner_failed(self, message: str) -> None:
        self._sync_phase()
        self.failed.emit(message)

    @Slot(object)
    def _on_runner_finished(self, result: Any) -> None:
        self._resume_after_snapshot = False
        self._sync_phase()  # idle: the thread is gone
        self.finished.emit(result)

    def _release_held_resume(self) -> None:
        if self._resume_after_snapshot:
            self._resume_after_snapshot = False
            self.resume()

    @Slot(object)
    def _on_snapshot_saved(self, files: Any) -> None:
        self.snapshot_saved.emit(files)
        self.snapshot_done.emit()
        self._release_held_resume()

    @Slot(object)
    def _on_snapshot_failed(self, exc: Any) -> None:
        self.snapshot_failed.emit(exc)
        self.snapshot_done.emit()
        self._release_held_resume()
