"""Runs that outlive the window: the "Keep running when the window closes" option, and
re-attaching, when a window opens, to runs that are still training.

A run started with the option on trains as a detached process (graftlab.core.process.attached):
closing the window leaves it going, and `graftlab status|pause|continue|stop RUN` reach it from
a terminal. When a window opens it looks for such runs (and any other run that is training now)
under the runs folders and offers to follow one: its plots are rebuilt from its metrics.jsonl,
then go on live, and Pause and Stop work on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graftlab.app.settings import AppSettings
from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QVBoxLayout,
    QWidget,
)


def ask_which_run(parent: QWidget, runs: list[Path]) -> Path | None:
    """A small list of the runs training now; the chosen one, or None for "Not now"."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Runs still training")
    layout = QVBoxLayout(dialog)
    layout.addWidget(QLabel(f"{len(runs)} run{'s are' if len(runs) > 1 else ' is'} still "
                            "training. Follow one in this window?"))
    view = QListWidget(dialog)
    view.addItems([str(r) for r in runs])
    view.setCurrentRow(0)
    layout.addWidget(view)
    buttons = QDialogButtonBox(dialog)
    buttons.addButton("Attach", QDialogButtonBox.ButtonRole.AcceptRole)
    buttons.addButton("Not now", QDialogButtonBox.ButtonRole.RejectRole)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    view.itemDoubleClicked.connect(lambda _item: dialog.accept())
    layout.addWidget(buttons)
    if dialog.exec() != QDialog.DialogCode.Accepted or view.currentRow() < 0:
        return None
    return runs[view.currentRow()]


class DetachedRuns(QObject):
    """Owns the keep-running option and the offer to re-attach (see the module docstring)."""

    def __init__(self, window: QWidget, settings: AppSettings, *,
                 roots: Callable[[], list[Path]], attach: Callable[[Path], None]) -> None:
        super().__init__(window)
        self.window, self.settings, self.roots, self.attach = window, settings, roots, attach
        self.chooser = ask_which_run  # (window, runs) -> run or None; tests replace it
        self.action = QAction("&Keep running when the window closes", window)
        self.action.setCheckable(True)
        self.action.setChecked(settings.keep_running())
        self.action.setStatusTip("Train in a process of its own that goes on when the window "
                                 "closes; a later window attaches to it again")
        self.action.toggled.connect(settings.set_keep_running)

    def enabled(self) -> bool:
        return self.action.isChecked()

    def running_runs(self) -> list[Path]:
        from graftlab.core.process.attached import live_runs

        return live_runs([r for r in self.roots() if r.is_dir()])

    @Slot()
    def offer_reattach(self) -> Path | None:
        """Look for runs that train now; attach to the one the user picks."""
        runs = self.running_runs()
        if not runs:
            return None
        chosen = self.chooser(self.window, runs)
        if chosen is not None:
            self.attach(chosen)
        return chosen
