"""The main window's way into its runs: Tools > Runs library (Ctrl+L) and Train > Open in
TensorBoard (the current run: the one training now or last trained in this window, else the
run folder in the form).

`RunsLibrary` is composed into the main window and receives what it needs explicitly: the
window (parent of the library window), the settings, the RunController (whose Started events
name the current run), and callables for the runs roots of the form, the form's run folder,
opening a run's configuration, resuming a run and a status line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftlab.app.errors import report, reports_errors
from graftlab.app.run.run_controller import RunController
from graftlab.app.run.tensorboard import NOT_INSTALLED, TensorBoardLauncher, tensorboard_available
from graftlab.app.settings import AppSettings
from graftlab.app.windows.actions import make_action
from graftlab.app.windows.runs_library import RunsLibraryWindow
from graftlab.core.errors import UserError
from graftlab.core.train.events import Started
from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QMainWindow


class RunsLibrary(QObject):
    """Owns the runs library window (one, reused) and the current run's TensorBoard."""

    def __init__(self, window: QMainWindow, settings: AppSettings, controller: RunController,
                 *, roots: Callable[[], list[Path]], form_run_dir: Callable[[], str],
                 open_config: Callable[[Path], Any], resume: Callable[[Path], Any],
                 show_status: Callable[..., None]) -> None:
        super().__init__(window)
        self.host, self.settings, self.roots = window, settings, roots
        self.form_run_dir, self.open_config, self.resume = form_run_dir, open_config, resume
        self.show_status = show_status
        self.window: RunsLibraryWindow | None = None
        self.last_run_dir: str | None = None  # the run this window trains or trained last
        self.tensorboard = TensorBoardLauncher(self)
        self.tensorboard.failed.connect(self._on_tensorboard_failed)
        controller.events.connect(self._on_run_events)
        self.open_action = make_action(window, "Runs &library…", self.open_library, "Ctrl+L",
                                       "Every run under the runs folders: compare, resume, "
                                       "open, delete")
        self.tensorboard_action = make_action(
            window, "Open in &TensorBoard", self.open_tensorboard, "Ctrl+Shift+T",
            "TensorBoard on the current run's event files (training.report_to: [tensorboard])")
        if not tensorboard_available():
            self.tensorboard_action.setEnabled(False)
            self.tensorboard_action.setToolTip(NOT_INSTALLED)
            self.tensorboard_action.setStatusTip(NOT_INSTALLED)

    @Slot()
    def open_library(self) -> RunsLibraryWindow:
        if self.window is None:
            self.window = RunsLibraryWindow(self.settings, parent=self.host,
                                            extra_roots=self.roots,
                                            open_config=self._open_config, resume=self._resume)
        elif not self.window.is_scanning():
            self.window.rescan()
        if self.window.isVisible():  # already open, perhaps behind: bring it forward
            self.window.raise_()
            self.window.activateWindow()
        self.window.show()
        return self.window

    def _open_config(self, run_dir: Path) -> None:
        self._to_front()
        self.open_config(run_dir)

    def _resume(self, run_dir: Path) -> None:
        self._to_front()
        self.resume(run_dir)

    def _to_front(self) -> None:
        if self.host.isVisible() and not self.host.isActiveWindow():
            self.host.raise_()
            self.host.activateWindow()

    def current_run_dir(self) -> str:
        return self.last_run_dir or self.form_run_dir()

    @Slot(object)
    def _on_run_events(self, batch: list[Any]) -> None:
        for ev in batch:
            if isinstance(ev, Started):
                self.last_run_dir = ev.run_dir

    @reports_errors
    def open_tensorboard(self) -> str:
        run_dir = Path(self.current_run_dir()).expanduser()
        if not run_dir.is_dir():
            raise UserError(f"run folder {run_dir} does not exist yet; train the run first, or "
                            "open an earlier one in the runs library (Ctrl+L).")
        url = self.tensorboard.open([run_dir])
        self.show_status(f"Starting TensorBoard on {run_dir.name} at {url}…")
        return url

    @Slot(str)
    def _on_tensorboard_failed(self, message: str) -> None:
        report(self, UserError(message))

    def shutdown(self) -> None:
        """Closing the main window: end TensorBoard, close the library (it ends its own)."""
        self.tensorboard.shutdown()
        if self.window is not None:
            self.window.close()
