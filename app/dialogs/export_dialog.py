"""Export a trained adapter for the runtime that will serve it: PEFT / transformers (the PEFT
folder as trained), vLLM (one uniform scale), llama.cpp / Ollama (a GGUF LoRA file) or a
merged standalone model. The dialog asks for the runtime, says in one line what will be
written, and calls the same core function as `graftlab export` (graftlab.core.adapter.formats).

The export runs off the GUI thread. A merge loads the full base weights, so it runs in a
short-lived child process (graftlab.core.process.oneshot): the window's process never holds
them, and a merge that runs out of memory takes only that process down. Afterwards the dialog
lists the written files with their sizes and offers to open the folder. Bad input comes back
from core as a UserError sentence shown in the dialog.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graftlab.app.run.background import BackgroundCall
from graftlab.core.adapter.destination import (
    OutputExistsError,
    OutputOccupiedError,
    check_output_dir,
    free_subfolder,
    is_graftlab_output,
)
from graftlab.core.adapter.formats import RUNTIMES, runtime_for
from graftlab.core.errors import UserError
from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

DEFAULT_FOLDERS = {"peft": "export-adapter", "uniform": "export-vllm", "gguf": "export-gguf",
                   "merged": "export-merged"}
WRITES = {"peft": "PEFT folder", "uniform": "PEFT folder, one scale", "gguf": "GGUF file",
          "merged": "full model"}


def _has_per_module_scales(adapter_dir: Path) -> bool:
    """rank_pattern, alpha_pattern or rsLoRA: what one-scale runtimes serve wrongly."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and bool(cfg.get("rank_pattern") or cfg.get("alpha_pattern")
                                          or cfg.get("use_rslora"))


def _gguf_base(adapter_dir: str, model_source: str) -> str | None:
    """The base whose config.json a GGUF export reads: the one the adapter (or its run)
    names, else the model open in the window."""
    from graftlab.core.adapter.targets import adapter_target

    try:
        return adapter_target(adapter_dir).base
    except UserError:
        return model_source or None


def run_export(fmt: str, adapter_dir: str, model_source: str, task: str,
               out_dir: str, overwrite: bool = False) -> tuple[list[tuple[Path, int]], list[Any]]:
    """Called in the background thread. A merge runs in a child process; the other formats
    (they import torch only to rewrite the adapter's small tensors) run here.

    Returns the written files and the compatibility findings for what was written.
    """
    if fmt == "merged":
        from graftlab.core.process.oneshot import call_in_child

        # The output folder is judged here first, so a refusal keeps its type (the dialog
        # offers "replace" or "a new subfolder") instead of coming back as a plain sentence.
        check_output_dir(out_dir, overwrite=overwrite)
        files = call_in_child("merge", model_source=model_source, adapter_dir=adapter_dir,
                              out_dir=out_dir, task=task, overwrite=overwrite)
        return [(Path(p), int(n)) for p, n in files], []
    from graftlab.core.adapter.formats import export_as

    base = _gguf_base(adapter_dir, model_source) if fmt == "gguf" else None
    files = export_as(fmt, adapter_dir, out_dir, base, overwrite=overwrite, task=task)
    # what vLLM and llama.cpp will make of the folder just written (a GGUF file was checked
    # while it was written: every tensor mapped, every scale folded)
    return files, compat_findings(out_dir) if fmt != "gguf" else []


def ask_replace(parent: QWidget, folder: Path) -> bool:
    """Replacing an earlier Graftlab export needs the user's consent."""
    answer = QMessageBox.question(
        parent, "Replace the earlier export?",
        f"{folder} holds an earlier Graftlab export. Replace it? It is kept until the new "
        "export is complete.",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
        QMessageBox.StandardButton.Cancel)
    return answer == QMessageBox.StandardButton.Yes


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
        self.setMinimumWidth(600)
        self.adapter_dir = Path(adapter_dir)
        self.model_source, self.task = model_source, task
        self.written: list[tuple[Path, int]] = []
        self._out_edited = False
        self.confirm_replace = ask_replace  # (dialog, folder) -> bool; tests replace it
        self.suggested_dir: Path | None = None
        self._per_module_scales = _has_per_module_scales(self.adapter_dir)
        self._call = BackgroundCall(self)
        self._call.succeeded.connect(self._on_export_succeeded)
        self._call.failed.connect(self._on_export_failed)

        # Which runtime will serve the adapter decides the format (and the folder written).
        self.runtime_buttons: dict[str, QRadioButton] = {}
        self._formats = QButtonGroup(self)
        runtime_box = QGroupBox("Which runtime will serve this adapter?")
        grid = QGridLayout(runtime_box)
        grid.setColumnStretch(1, 1)
        for row, runtime in enumerate(RUNTIMES):
            button = QRadioButton(runtime.label)
            button.setToolTip(runtime.explains)
            writes = QLabel(WRITES[runtime.format])
            writes.setStyleSheet("color: palette(placeholder-text);")
            writes.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            grid.addWidget(button, row, 0, Qt.AlignmentFlag.AlignLeft)
            grid.addWidget(writes, row, 1)
            self._formats.addButton(button)
            self.runtime_buttons[runtime.format] = button
            button.toggled.connect(self._on_format_toggled)
        self.explain_label = QLabel(wordWrap=True)
        self.explain_label.setMargin(6)  # (a style-sheet padding breaks the wrapped height)
        self.explain_label.setStyleSheet("border-radius: 3px; "
                                         "background: palette(alternate-base);")
        grid.addWidget(self.explain_label, len(RUNTIMES), 0, 1, 2)

        self.out_edit = QLineEdit(str(self._default_out("peft")))
        self.out_edit.textEdited.connect(self._on_out_edited)
        browse = QToolButton(text="…", toolTip="Choose the output folder")
        browse.clicked.connect(self._on_browse_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        # Shown when the chosen folder holds someone else's files: export into a new subfolder.
        self.subfolder_button = QPushButton("Use a new subfolder")
        self.subfolder_button.setVisible(False)
        self.subfolder_button.clicked.connect(self.use_suggested_subfolder)

        form = QFormLayout()
        form.addRow("Adapter", QLabel(str(self.adapter_dir), wordWrap=True))
        form.addRow("Output folder", out_row)

        # The compatibility rules (vLLM, llama.cpp, file size) run on every export, never silently.
        self.compat_label = QLabel("The export is checked against PEFT, vLLM and llama.cpp's "
                                   "converter.", wordWrap=True)
        self.compat_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.compat_findings: list[Any] | None = None
        self._note = ""  # what a merge of this adapter wants said
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
        self.export_button.clicked.connect(self._on_export_clicked)
        self.open_button.clicked.connect(self.open_folder)
        self.close_button.clicked.connect(self.reject)
        self.export_button.setDefault(True)

        layout = QVBoxLayout(self)
        layout.addWidget(runtime_box)
        layout.addLayout(form)
        layout.addWidget(self.compat_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.subfolder_button)
        layout.addWidget(self.files_table, 1)
        layout.addWidget(self.buttons)
        self.runtime_buttons["peft"].setChecked(True)

    # ---- choices ------------------------------------------------------------------------------
    def export_format(self) -> str:
        """The export format of the chosen runtime: peft, uniform, gguf or merged."""
        return next(f for f, b in self.runtime_buttons.items() if b.isChecked())

    def set_export_format(self, fmt: str) -> None:
        self.runtime_buttons[fmt].setChecked(True)

    def _default_out(self, fmt: str) -> Path:
        return self.adapter_dir.parent / DEFAULT_FOLDERS[fmt]

    @Slot(str)
    def _on_out_edited(self, _text: str) -> None:
        self._out_edited = True

    @Slot(bool)
    def _on_format_toggled(self, checked: bool) -> None:
        if not checked:
            return
        fmt = self.export_format()
        text = runtime_for(fmt).explains
        if fmt == "peft" and self._per_module_scales:
            text += (" This adapter has per-module ranks or alphas: for vLLM or llama.cpp, "
                     "choose them above so they serve it at its trained strength.")
        self.explain_label.setText(text)
        if self.written or self.error_text():  # what is shown was for the previous choice
            self.written = []
            self.files_table.setVisible(False)
            self.status_label.setText("")
            self.status_label.setStyleSheet("")
            self.subfolder_button.setVisible(False)
            self.open_button.setEnabled(False)
        if not self._out_edited:
            self.out_edit.setText(str(self._default_out(fmt)))

    @Slot()
    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.out_edit.text())
        if folder:
            self.set_output_folder(Path(folder))

    def set_output_folder(self, folder: Path) -> None:
        """A chosen folder that holds other files gets a new subfolder for the export, so its
        contents are never replaced."""
        if folder.is_dir() and any(folder.iterdir()) and not is_graftlab_output(folder):
            folder = free_subfolder(folder, self._default_out(self.export_format()).name)
        self.out_edit.setText(str(folder))
        self._out_edited = True

    # ---- export -------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._call.is_running()

    def _show_compat(self, findings: list[Any], fmt: str = "peft") -> None:
        self.compat_findings = findings
        if not findings:
            self.compat_label.setText({
                "gguf": "Compatibility: every tensor mapped to llama.cpp's names, every "
                        "module's scale folded in.",
                "merged": "Compatibility: a merged model needs no adapter support from the "
                          "runtime."}.get(fmt, "Compatibility: no known problems for PEFT, "
                                               "vLLM or llama.cpp's converter."))
            return
        lines = [f"<b>{f.severity}</b> [{f.target}]: {f.message}" for f in findings]
        self.compat_label.setText("Compatibility:<br>" + "<br>".join(lines))

    @Slot()
    def use_suggested_subfolder(self) -> None:
        if self.suggested_dir is not None:
            self.out_edit.setText(str(self.suggested_dir))
            self._out_edited = True
        self.subfolder_button.setVisible(False)
        self.status_label.setText("")
        self.status_label.setStyleSheet("")

    @Slot()
    def _on_export_clicked(self) -> None:
        self.start_export()

    def start_export(self, overwrite: bool = False) -> None:
        out = self.out_edit.text().strip()
        if not out:
            self._show_error("Choose an output folder for the export.")
            return
        self.subfolder_button.setVisible(False)
        self._set_busy(True)
        what = {"peft": "Copying the adapter", "uniform": "Writing the uniform-scale adapter",
                "gguf": "Writing the llama.cpp LoRA file",
                "merged": "Merging and saving the model (in a separate process)"}
        what = what[self.export_format()]
        self._note = ""
        if self.export_format() == "merged":  # e.g. a run trained on a 4-bit copy of its base
            from graftlab.core.model.quantization import merge_note

            note = merge_note(self.adapter_dir, self.model_source)
            self._note = f" Note: {note[0].upper()}{note[1:]}" if note else ""
        self.status_label.setStyleSheet("")
        self.status_label.setText(f"{what} to {out} …{self._note}")
        self._call.start(run_export, self.export_format(), str(self.adapter_dir), self.model_source,
                         self.task, out, overwrite)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        for w in (self.export_button, self.out_edit, *self.runtime_buttons.values()):
            w.setEnabled(not busy)
        self.close_button.setEnabled(not busy)

    @Slot(object)
    def _on_export_succeeded(self, outcome: Any) -> None:
        self._set_busy(False)
        files, findings = outcome if isinstance(outcome, tuple) else (outcome, [])
        self._show_compat(findings, self.export_format())
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
                                  f"to {out}.{self._note}")
        self.open_button.setEnabled(True)

    @Slot(object)
    def _on_export_failed(self, exc: Any) -> None:
        self._set_busy(False)
        if isinstance(exc, OutputExistsError):
            if self.confirm_replace(self, exc.folder):
                self.start_export(overwrite=True)
                return
            self._show_error("Not exported: the earlier export was kept; choose another "
                             "folder to keep both.")
            return
        if isinstance(exc, OutputOccupiedError):
            self.suggested_dir = exc.suggestion
            self.subfolder_button.setText(f"Use a new subfolder: {exc.suggestion.name}")
            self.subfolder_button.setVisible(True)
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
