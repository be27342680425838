"""The main window's status bar: a busy indicator, the trainable count, and the run's progress.

`RunStatusBar` is composed into the window. It fills the window's QStatusBar with its widgets
and follows the RunController: the step bar and the loss/ETA line come from the run's events,
and both hide when the run has ended. Messages (`show`) are the status bar's own.
"""

from __future__ import annotations

from typing import Any

from graftlab.app.numbers import duration
from graftlab.app.run.run_controller import RunController
from graftlab.core.train.events import Paused, Started, Step
from graftlab.core.train.lifecycle import RunPhase
from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar


class RunStatusBar(QObject):
    """The permanent widgets of `bar`, kept up to date from `controller`."""

    def __init__(self, bar: QStatusBar, controller: RunController) -> None:
        super().__init__(bar)
        self.bar = bar
        self.busy_label = QLabel("")
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(90)
        self.busy_bar.setMaximumHeight(12)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.trainable_label = QLabel("")
        self.run_progress = QProgressBar()
        self.run_progress.setMaximumWidth(220)
        self.run_progress.setMaximumHeight(14)
        self.run_progress.setFormat("step %v / %m")
        self.run_progress.hide()
        self.eta_label = QLabel("")
        for w in (self.busy_label, self.busy_bar, self.trainable_label, self.run_progress,
                  self.eta_label):
            bar.addPermanentWidget(w)
        controller.events.connect(self._on_run_events)
        controller.phase_changed.connect(self._on_phase_changed)

    def show(self, text: str, timeout_ms: int = 8000) -> None:
        self.bar.showMessage(text, timeout_ms)

    @Slot(bool)
    def set_busy(self, busy: bool) -> None:
        self.busy_bar.setVisible(busy)
        self.busy_label.setText("Working…" if busy else "")
        if not busy and self.bar.currentMessage().endswith("…"):
            self.bar.clearMessage()

    @Slot(object)
    def _on_phase_changed(self, phase: RunPhase) -> None:
        running = phase is not RunPhase.IDLE
        self.run_progress.setVisible(running)
        if not running:
            self.eta_label.setText("")

    @Slot(object)
    def _on_run_events(self, batch: list[Any]) -> None:
        last: Step | None = None
        for ev in batch:
            if isinstance(ev, Started):
                self.run_progress.setRange(0, max(ev.total_steps, 1))
                self.run_progress.setValue(ev.start_step)
                self.eta_label.setText(f"{ev.device} · {ev.precision}")
            elif isinstance(ev, Step):
                last = ev
            elif isinstance(ev, Paused):
                self.eta_label.setText(f"paused at step {ev.step}")
                self.run_progress.setValue(min(ev.step, self.run_progress.maximum()))
                last = None  # the ETA stays "paused" until training goes on
        if last is not None:
            self.run_progress.setValue(min(last.step, self.run_progress.maximum()))
            self.eta_label.setText(f"loss {last.loss:.4f} · ETA {duration(last.eta_s)}")
