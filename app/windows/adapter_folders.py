"""Adapter folders, as the main window handles them: export the trained adapter, export the
adapter of a paused run ("export current"), and open folders in the adapter inspector.

`AdapterFolders` is mixed into MainWindow: its methods use the window's runner, settings,
panels, `report_error` and `_show_status`, and its state `last_adapter_dir`, `last_snapshot`,
`inspector`, `_live_run_dir` and `_paused_step` (set up in MainWindow.__init__).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftlab.app.dialogs.export_dialog import ExportDialog
from graftlab.app.errors import reports_errors
from graftlab.app.windows.inspector_window import InspectorWindow
from graftlab.core.errors import UserError
from graftlab.core.train.events import Paused, Started
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QFileDialog


class AdapterFolders:
    """MainWindow's export and inspector slots (a mixin: see the module docstring)."""

    @Slot(object)
    def _on_pause_events(self, batch: list[Any]) -> None:
        for ev in batch:
            if isinstance(ev, Started):
                self._live_run_dir = ev.run_dir
            elif isinstance(ev, Paused):
                self._paused_step = ev.step
        self.export_current_action.setEnabled(self.runner.can_snapshot())

    @reports_errors
    def export_current_adapter(self, out_dir: str | Path | None = None) -> None:
        """While paused: save the adapter as it is now (in the background; big adapters take
        a while). Without `out_dir`, asks for a folder and writes adapter-step-N into it."""
        if not self.runner.can_snapshot():
            raise UserError("pause the run and wait until it has paused before exporting its "
                            "adapter mid-training.")
        if out_dir is None:
            start = self._live_run_dir or self.settings.last_dir("adapter")
            folder = QFileDialog.getExistingDirectory(
                self, "Export the current adapter into folder", start)
            if not folder:
                return
            out_dir = Path(folder) / f"adapter-step-{self._paused_step}"
        self.runner.snapshot_adapter(out_dir)
        self.export_current_action.setEnabled(False)
        self._show_status(f"Saving the adapter at step {self._paused_step} to {out_dir}…", 0)

    @Slot(object)
    def _on_snapshot_saved(self, files: list[tuple[Path, int]]) -> None:
        self.last_snapshot = [(Path(p), int(n)) for p, n in files]
        folder = self.last_snapshot[0][0].parent if self.last_snapshot else None
        self._show_status(f"Saved the adapter at step {self._paused_step} to {folder} "
                          f"({sum(n for _p, n in self.last_snapshot):,} bytes)")
        self.log_view.add_line(f"Exported the adapter at step {self._paused_step} to {folder}")
        self.export_current_action.setEnabled(self.runner.can_snapshot())

    @Slot(object)
    def _on_snapshot_failed(self, exc: BaseException) -> None:
        self.export_current_action.setEnabled(self.runner.can_snapshot())
        self.report_error(exc, getattr(exc, "formatted_traceback", None))

    @reports_errors
    def export_adapter(self) -> None:
        folder = self.last_adapter_dir
        if not folder:
            folder = QFileDialog.getExistingDirectory(
                self, "Choose an adapter folder to export", self.settings.last_dir("adapter"))
            if not folder:
                return
            self.settings.set_last_dir("adapter", folder)
        model = self.model_panel.values()
        dialog = ExportDialog(folder, model.source, model.task, self)
        dialog.open()

    def open_inspector(self, folder: str | None = None,
                       compare_with: str | None = None) -> InspectorWindow:
        """The inspector window (one, reused), reading `folder` if given."""
        if self.inspector is None:
            self.inspector = InspectorWindow(self, self.settings.last_dir("adapter"))
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
        folder = QFileDialog.getExistingDirectory(self, "Open a LoRA adapter folder", start)
        if folder:
            self.settings.set_last_dir("adapter", folder)
            self.open_inspector(folder)

    @Slot()
    def compare_adapter_folders(self) -> None:
        start = self.last_adapter_dir or self.settings.last_dir("adapter")
        first = QFileDialog.getExistingDirectory(self, "First adapter folder (A)", start)
        if not first:
            return
        second = QFileDialog.getExistingDirectory(self, "Second adapter folder (B)", first)
        if second:
            self.settings.set_last_dir("adapter", second)
            self.open_inspector(first, second)
