"""The window's run commands: the checks before Start, Stop's question (save, discard or
cancel), ending a run that does not stop, and what the window enables while a run is in
progress. The run itself is the RunController's; this object asks and checks.

`RunCommands` is composed into the main window and receives what it needs explicitly: the
window (`host`, parent of its questions; it shows errors and keeps `last_error`), the
controller, the RunForm, the plots and the log, the actions that only work while idle, the
panels that are read-only while a run is in progress, and callables for a status line and for
showing the monitor tab.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graftlab.app.dialogs.stop_dialog import CANCEL, SAVE, ask_end_now, ask_stop_choice
from graftlab.app.errors import reports_errors
from graftlab.app.panels.log_view import LogView
from graftlab.app.plots.metric_plots import MetricPlots
from graftlab.app.run.run_controller import RunController
from graftlab.app.windows.run_form import RunForm
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import RunConfig, validate
from graftlab.core.errors import UserError
from graftlab.core.train.checkpoints import CheckpointInfo
from graftlab.core.train.events import Event, Failed
from graftlab.core.train.lifecycle import RunPhase
from PySide6.QtCore import QObject, QTimer, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMessageBox, QWidget

# Greying out the panels at Start repaints most of the window (~40 ms offscreen). It happens
# this long after Start, so it is not in the same frame as the monitor tab's first paint.
PANEL_LOCK_DELAY_MS = 20


class RunCommands(QObject):
    """Start, stop and the window's run-time state (see the module docstring)."""

    def __init__(self, window: QWidget, controller: RunController, form: RunForm, *,
                 plots: MetricPlots, log_view: LogView, pause_action: QAction,
                 stop_action: QAction, idle_actions: Sequence[QAction],
                 locked_while_running: Sequence[QWidget], show_status: Callable[..., None],
                 show_monitor: Callable[[], None]) -> None:
        super().__init__(window)
        self.host, self.controller, self.form = window, controller, form
        self.plots, self.log_view = plots, log_view
        self.pause_action, self.stop_action = pause_action, stop_action
        self.idle_actions = list(idle_actions)
        self.locked_while_running = list(locked_while_running)
        self.show_status, self.show_monitor = show_status, show_monitor
        self.stop_chooser = ask_stop_choice  # (window) -> save/discard/cancel; tests replace it
        self.end_chooser = ask_end_now  # (window) -> kill a run that is still stopping?
        self.keep_running: Callable[[], bool] = lambda: False  # start runs detached?
        controller.events.connect(self._on_run_events)
        controller.phase_changed.connect(self._on_phase_changed)
        controller.failed.connect(self._on_run_failed)
        controller.finished.connect(self._on_run_finished)
        pause_action.setEnabled(False)
        stop_action.setEnabled(False)

    @reports_errors
    def start_training(self) -> None:
        if self.controller.is_running():
            return
        if self.form.tree is None or self.form.source is None:
            raise UserError("open a model first (File > Open model folder, or a demo).",
                            field="model.source")
        cfg = self.form.checked_run_config()
        validate(cfg, "run settings")
        plan_adapter(self.form.tree, cfg.adapter, "layer tree")
        from graftlab.core.model.loading import check_weights

        check_weights(self.form.source, cfg.model.allow_pickle_weights)  # the CLI's exact sentence
        self.plots.clear()
        self.log_view.add_line(f"Starting: {self.form.source.spec}, {len(cfg.adapter.targets):,} "
                               "modules with adapters")
        keep = self.keep_running()
        self.controller.start(cfg, keep_running=keep)
        self.show_monitor()
        self.show_status("Training started" + (" (it keeps running when the window closes)"
                                               if keep else ""))

    def start_resumed(self, cfg: RunConfig, history: list[Event],
                       checkpoint: CheckpointInfo) -> None:
        """RunFiles.resume_run: show the run folder's run.yaml and history, and go on."""
        self.form.apply_run_config(cfg)
        self.plots.load_history(history)
        run_dir = Path(cfg.training.output_dir)
        self.log_view.add_line(f"Resuming {run_dir} from step {checkpoint.step} of "
                               f"{checkpoint.max_steps}")
        self.controller.start(cfg, resume=True, keep_running=self.keep_running())
        self.show_monitor()
        self.show_status(f"Resuming {run_dir.name} at step {checkpoint.step}")

    @reports_errors
    def attach_run(self, run_dir: str | Path) -> None:
        """Follow a run that trains on its own now: its history into the plots, then live."""
        if self.controller.is_running():
            raise UserError("a run is in progress in this window; stop it before attaching to "
                            "another one.")
        self.plots.clear()
        cfg = self.controller.attach(run_dir)
        self.form.apply_run_config(cfg)
        self.log_view.add_line(f"Attached to {run_dir}: it keeps training when this window "
                               "closes")
        self.show_monitor()
        self.show_status(f"Following {Path(run_dir).name}")

    @Slot()
    def stop_training(self, save: bool = True) -> None:
        if self.controller.is_running():
            self.controller.stop(save)
            self.show_status("Stopping after the current step…", 0)

    @Slot(bool)
    def _on_stop_requested(self, save: bool) -> None:
        self.ask_and_stop()

    @Slot(object)
    def _on_phase_changed(self, phase: RunPhase) -> None:
        running = phase is not RunPhase.IDLE
        if running:  # greying the panels repaints most of the window: one frame after Start's
            QTimer.singleShot(PANEL_LOCK_DELAY_MS, self, self._lock_panels_while_running)
        else:
            self._lock_panels_while_running()
        for a in self.idle_actions:
            a.setEnabled(not running)
        self.pause_action.setEnabled(phase in (RunPhase.STARTING, RunPhase.RUNNING,
                                               RunPhase.PAUSING, RunPhase.PAUSED))
        self.stop_action.setEnabled(running)

    @Slot()
    def _lock_panels_while_running(self) -> None:
        """The model, tree, adapter and data panels are read-only while a run is in progress
        (Start and the open actions are disabled at once, by `_on_phase_changed`)."""
        running = self.controller.is_running()
        for w in self.locked_while_running:
            w.setEnabled(not running)

    @Slot(object)
    def _on_run_events(self, batch: list[Any]) -> None:
        for ev in batch:
            if isinstance(ev, Failed):
                self.host.last_error = ev.message

    @Slot(str)
    def _on_run_failed(self, message: str) -> None:
        exc = self.controller.last_error
        if isinstance(exc, UserError):
            self.host.report_error(exc)
        else:
            self.host.last_error = message.strip().splitlines()[-1] if message.strip() else message
            box = QMessageBox(QMessageBox.Icon.Critical, "Training failed",
                              "The run failed. The app is still usable; details below.",
                              QMessageBox.StandardButton.Ok, self.host)
            box.setDetailedText(message)
            box.open()

    @Slot(object)
    def _on_run_finished(self, result: Any) -> None:
        adapter_dir = getattr(result, "adapter_dir", None)
        if adapter_dir:
            self.show_status(f"Run finished; adapter saved to {adapter_dir}")

    @Slot()
    def ask_and_stop(self) -> str:
        """Stop asks: save the adapter, discard it, or cancel (`stop_chooser`, Save default)."""
        if not self.controller.is_running():
            return CANCEL
        if self.controller.phase() is RunPhase.STOPPING:  # asked before; not stopped yet
            self.end_if_wanted()
            return CANCEL
        choice = self.stop_chooser(self.host)
        if choice != CANCEL and self.controller.is_running():
            self.stop_training(save=choice == SAVE)
        return choice

    def end_if_wanted(self) -> bool:
        """A run that is still stopping: ask (`end_chooser`), then end its process now."""
        if self.controller.is_running() and self.end_chooser(self.host):
            self.controller.kill()
            self.show_status("Ending the training process…", 0)
            return True
        return False
