"""Export a trained adapter: a plain PEFT folder (default) or a merged standalone model.

The export runs off the GUI thread. A merge loads the full base weights, so it runs in a
short-lived child process (graftlab.core.process.oneshot): the window's process never holds
them, and a merge that runs out of memory takes only that process down. Afterwards the dialog
lists the written files with their sizes and offers to open the folder. Bad input comes back
from core as a UserError sentence shown in the dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graftlab.app.run.background import BackgroundCall
from graftlab.core.errors import UserError
from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

KINDS = ("adapter", "merged")


def run_export(kind: str, adapter_dir: str, model_source: str, task: str,
               out_dir: str) -> tuple[list[tuple[Path, int]], list[Any]]:
    """Called in the background thread. A merge runs in a child process; copying an adapter
    folder imports no torch and runs here.

    Returns the written files and the compatibility findings for the adapter.
    """
    if kind == "merged":
        from graftlab.core.process.oneshot import call_in_child

        files = call_in_child("merge", model_source=model_source, adapter_dir=adapter_dir,
                              out_dir=out_dir, task=task)
        return [(Path(p), int(n)) for p, n in files], []
    from graftlab.core.adapter.export import export_adapter

    return export_adapter(adapter_dir, out_dir), compat_findings(adapter_dir)


def compat_findings(adapter_dir: str) -> list[Any]:
    """Compatibility findings for the adapter about to be exported (runs off the GUI thread)."""
    from graftlab.core.adapter.compat import check_adapter
    from graftlab.core.adapter.info import read_adapter

    return check_adapter(read_adapter(adapter_dir))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


class ExportDialog(QDialog):
    def __init__(self, adapter_dir: str | Path, model_source: str, task: str = "auto",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export adapter")
        self.setMinimumWidth(560)
        self.adapter_dir = Path(adapter_dir)
        self.model_source, self.task = model_source, task
        self.written: list[tuple[Path, int]] = []
        self._out_edited = False
        self._call = BackgroundCall(self)
        self._call.succeeded.connect(self._on_export_succeeded)
        self._call.failed.connect(self._on_export_failed)

        self.adapter_radio = QRadioButton("PEFT adapter folder (adapter_config.json + "
                                          "adapter_model.safetensors)")
        self.adapter_radio.setToolTip("Small; loads with peft.PeftModel.from_pretrained(base, "
                                      "folder) in PEFT, transformers and vLLM")
        self.merged_radio = QRadioButton("Merged model (base weights with the adapter folded in)")
        self.merged_radio.setToolTip(f"A standalone model of {model_source} plus its tokenizer; "
                                     "as large as the base model")
        self.adapter_radio.setChecked(True)
        self._kinds = QButtonGroup(self)
        self._kinds.addButton(self.adapter_radio)
        self._kinds.addButton(self.merged_radio)
        self.adapter_radio.toggled.connect(self._on_kind_toggled)

        self.out_edit = QLineEdit(str(self._default_out("adapter")))
        self.out_edit.textEdited.connect(self._on_out_edited)
        browse = QToolButton(text="…", toolTip="Choose the output folder")
        browse.clicked.connect(self._on_browse_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("Adapter", QLabel(str(self.adapter_dir), wordWrap=True))
        form.addRow("Output folder", out_row)

        # The compatibility rules (vLLM, llama.cpp, file size) run on every export, never silently.
        self.compat_label = QLabel("The export is checked against PEFT, vLLM and llama.cpp's "
                                   "converter.", wordWrap=True)
        self.compat_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.compat_findings: list[Any] | None = None
        self.progress = QProgressBar(minimum=0, maximum=0)  # busy: core reports no fractions
        self.progress.setVisible(False)
        self.status_label = QLabel(wordWrap=True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.files_table = QTableWidget(0, 2)
        self.files_table.setHorizontalHeaderLabels(["File", "Size"])
        self.files_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.files_table.verticalHeader().setVisible(False)
        self.files_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.files_table.setVisible(False)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export",
                                                    QDialogButtonBox.ButtonRole.AcceptRole)
        self.open_button = QPushButton("Open folder")
        self.buttons.addButton(self.open_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.open_button.setEnabled(False)
        self.export_button.clicked.connect(self.start_export)
        self.open_button.clicked.connect(self.open_folder)
        self.close_button.clicked.connect(self.reject)
        self.export_button.setDefault(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.adapter_radio)
        layout.addWidget(self.merged_radio)
        layout.addLayout(form)
        layout.addWidget(self.compat_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.files_table, 1)
        layout.addWidget(self.buttons)

    # ---- choices ------------------------------------------------------------------------------
    def kind(self) -> str:
        return "merged" if self.merged_radio.isChecked() else "adapter"

    def set_kind(self, kind: str) -> None:
        (self.merged_radio if kind == "merged" else self.adapter_radio).setChecked(True)

    def _default_out(self, kind: str) -> Path:
        run_dir = self.adapter_dir.parent
        return run_dir / ("export-merged" if kind == "merged" else "export-adapter")

    @Slot(str)
    def _on_out_edited(self, _text: str) -> None:
        self._out_edited = True

    @Slot(bool)
    def _on_kind_toggled(self, _checked: bool) -> None:
        if not self._out_edited:
            self.out_edit.setText(str(self._default_out(self.kind())))

    @Slot()
    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)
            self._out_edited = True

    # ---- export -------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._call.is_running()

    def _show_compat(self, findings: list[Any]) -> None:
        self.compat_findings = findings
        if not findings:
            self.compat_label.setText("Compatibility: no known problems for PEFT, vLLM or "
                                      "llama.cpp's converter.")
            return
        lines = [f"<b>{f.severity}</b> [{f.target}]: {f.message}" for f in findings]
        self.compat_label.setText("Compatibility:<br>" + "<br>".join(lines))

    @Slot()
    def start_export(self) -> None:
        out = self.out_edit.text().strip()
        if not out:
            self._show_error("Choose an output folder for the export.")
            return
        self._set_busy(True)
        what = ("Merging and saving the model (in a separate process)" if self.kind() == "merged"
                else "Copying the adapter")
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"{what} to {out} …")
        self._call.start(run_export, self.kind(), str(self.adapter_dir), self.model_source,
                         self.task, out)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        for w in (self.export_button, self.adapter_radio, self.merged_radio, self.out_edit):
            w.setEnabled(not busy)
        self.close_button.setEnabled(not busy)

    @Slot(object)
    def _on_export_succeeded(self, outcome: Any) -> None:
        self._set_busy(False)
        files, findings = outcome if isinstance(outcome, tuple) else (outcome, [])
        self._show_compat(findings)
        self.written = [(Path(p), int(n)) for p, n in files]
        out = Path(self.out_edit.text().strip())
        self.files_table.setRowCount(len(self.written))
        for row, (path, size) in enumerate(self.written):
            try:
                name = str(path.relative_to(out))
            except ValueError:
                name = str(path)
            self.files_table.setItem(row, 0, QTableWidgetItem(name))
            size_item = QTableWidgetItem(human_size(size))
            size_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files_table.setItem(row, 1, size_item)
        self.files_table.setVisible(True)
        total = sum(n for _p, n in self.written)
        self.status_label.setText(f"Wrote {len(self.written)} files ({human_size(total)}) "
                                  f"to {out}")
        self.open_button.setEnabled(True)

    @Slot(object)
    def _on_export_failed(self, exc: Any) -> None:
        self._set_busy(False)
        if isinstance(exc, UserError):
            self._show_error(exc.message)
        else:
            # one line here; the details (the child's traceback for a merge) in the tooltip
            first = (str(exc).strip().splitlines() or [""])[0]
            self._show_error(f"Export failed: {type(exc).__name__}: {first}")
            self.status_label.setToolTip(f"{exc}\n\n{getattr(exc, 'formatted_traceback', '')}")

    def _show_error(self, message: str) -> None:
        self.status_label.setStyleSheet("color: #c0392b;")
        self.status_label.setText(message)

    def error_text(self) -> str:
        return self.status_label.text() if self.status_label.styleSheet() else ""

    @Slot()
    def open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(self.out_edit.text().strip()))

    # An export cannot be interrupted halfway (it writes into a temporary folder and renames it
    # into place): closing waits for it rather than leaving a thread behind.
    def reject(self) -> None:
        if self.is_busy():
            return
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.is_busy():
            event.ignore()
            return
        super().closeEvent(event)
