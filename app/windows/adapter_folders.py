"""Adapter folders, as the main window handles them: export the trained adapter, export the
adapter of a paused run ("export current"), and open folders in the adapter inspector.

`AdapterFolders` is composed into the main window and receives what it needs explicitly: the
window (parent of its dialogs), the settings, the RunController (whose events and snapshot
signals it follows), the "export current adapter" action it enables, and callables for the
model the window shows, a status line and a log line. It keeps the last trained adapter
folder, the files of the last export-while-paused, and the one inspector window.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftlab.app.dialogs.export_dialog import ExportDialog
from graftlab.app.errors import report, reports_errors
from graftlab.app.run.run_controller import NOT_PAUSED, RunController
from graftlab.app.settings import AppSettings
from graftlab.app.windows.inspector_window import InspectorWindow
from graftlab.core.config import ModelConfig
from graftlab.core.errors import UserError
from graftlab.core.train.events import Finished, Paused, Started
from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QWidget


class AdapterFolders(QObject):
    """The window's export and inspector commands (see the module docstring)."""

    def __init__(self, window: QWidget, settings: AppSettings, controller: RunController,
                 export_current_action: QAction, *, model: Callable[[], ModelConfig],
                 show_status: Callable[..., None], log_line: Callable[[str], None]) -> None:
        super().__init__(window)
        self.host, self.settings, self.controller = window, settings, controller
        self.export_current_action = export_current_action
        self.model, self.show_status, self.log_line = model, show_status, log_line
        self.last_adapter_dir: str | None = None
        self.last_snapshot: list[tuple[Path, int]] = []  # files of the last "export current"
        self.inspector: InspectorWindow | None = None
        self._live_run_dir: str | None = None
        self._paused_step = 0
        controller.events.connect(self._on_run_events)
        controller.finished.connect(self._on_run_finished)
        controller.phase_changed.connect(self._update_export_current)
        controller.snapshot_saved.connect(self._on_snapshot_saved)
        controller.snapshot_failed.connect(self._on_snapshot_failed)
        export_current_action.setEnabled(False)

    @Slot(object)
    def _on_run_events(self, batch: list[Any]) -> None:
        for ev in batch:
            if isinstance(ev, Started):
                self._live_run_dir = ev.run_dir
            elif isinstance(ev, Paused):
                self._paused_step = ev.step
            elif isinstance(ev, Finished):
                self.last_adapter_dir = ev.adapter_dir or self.last_adapter_dir
        self._update_export_current()

    @Slot(object)
    def _on_run_finished(self, result: Any) -> None:
        adapter_dir = getattr(result, "adapter_dir", None)
        if adapter_dir:
            self.last_adapter_dir = str(adapter_dir)
        self._update_export_current()

    @Slot()
    def _update_export_current(self, *_phase: Any) -> None:
        self.export_current_action.setEnabled(self.controller.can_snapshot())

    @reports_errors
    def export_current_adapter(self, out_dir: str | Path | None = None) -> None:
        """While paused: save the adapter as it is now (in the background; big adapters take
        a while). Without `out_dir`, asks for a folder and writes adapter-step-N into it."""
        if not self.controller.can_snapshot():
            raise UserError(NOT_PAUSED)
        if out_dir is None:
            start = self._live_run_dir or self.settings.last_dir("adapter")
            folder = QFileDialog.getExistingDirectory(
                self.host, "Export the current adapter into folder", start)
            if not folder:
                return
            out_dir = Path(folder) / f"adapter-step-{self._paused_step}"
        self.controller.snapshot_adapter(out_dir)
        self.export_current_action.setEnabled(False)
        self.show_status(f"Saving the adapter at step {self._paused_step} to {out_dir}…", 0)

    @Slot(object)
    def _on_snapshot_saved(self, files: list[tuple[Path, int]]) -> None:
        self.last_snapshot = [(Path(p), int(n)) for p, n in files]
        folder = self.last_snapshot[0][0].parent if self.last_snapshot else None
        self.show_status(f"Saved the adapter at step {self._paused_step} to {folder} "
                         f"({sum(n for _p, n in self.last_snapshot):,} bytes)")
        self.log_line(f"Exported the adapter at step {self._paused_step} to {folder}")
        self._update_export_current()

    @Slot(object)
    def _on_snapshot_failed(self, exc: BaseException) -> None:
        self._update_export_current()
        report(self.host, exc, getattr(exc, "formatted_traceback", None))

    @reports_errors
    def export_adapter(self) -> None:
        folder = self.last_adapter_dir
        if not folder:
            folder = QFileDialog.getExistingDirectory(
                self.host, "Choose an adapter folder to export", self.settings.last_dir("adapter"))
            if not folder:
                return
            self.settings.set_last_dir("adapter", folder)
        model = self.model()
        dialog = ExportDialog(folder, model.source, model.task, self.host)
        dialog.open()

    def open_inspector(self, folder: str | None = None,
                       compare_with: str | None = None) -> InspectorWindow:
        """The inspector window (one, reused), reading `folder` if given."""
        if self.inspector is None:
            self.inspector = InspectorWindow(self.host, self.settings.last_dir("adapter"))
        if self.inspector.isVisible():  # already open, perhaps behind: bring it forward
            self.inspector.raise_()
            self.inspector.activateWindow()
        self.inspector.show()
        if folder:
            self.inspector.open_folder(folder, compare_with)
        return self.inspector

    @Slot()
    def inspect_adapter(self) -> None:
        start = self.last_adapter_dir or self.settings.last_dir("adapter")
        folder = QFileDialog.getExistingDirectory(self.host, "Open a LoRA adapter folder", start)
        if folder:
            self.settings.set_last_dir("adapter", folder)
            self.open_inspector(folder)

    @Slot()
    def compare_adapter_folders(self) -> None:
        start = self.last_adapter_dir or self.settings.last_dir("adapter")
        first = QFileDialog.getExistingDirectory(self.host, "First adapter folder (A)", start)
        if not first:
            return
        second = QFileDialog.getExistingDirectory(self.host, "Second adapter folder (B)", first)
        if second:
            self.settings.set_last_dir("adapter", second)
            self.open_inspector(first, second)
