"""Resume a run: the resumable run folders (complete checkpoints) with progress and date.

Scanning verifies each checkpoint's SHA-256 marker (graftlab.core.train.checkpoints), which
reads every file of it, so the scan runs off the GUI thread. A run that reached max_steps and
saved its adapter is listed but cannot be chosen.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from graftlab.app.run.background import BackgroundCall
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Run folder", "Progress", "Last checkpoint", "State")


@dataclass(frozen=True)
class RunRow:
    run_dir: Path
    step: int
    max_steps: int
    finished: bool
    saved_at: float  # mtime of the latest checkpoint (seconds since the epoch)


def completed(run_dir: Path) -> bool:
    """True when metrics.jsonl ends with a `finished` event of a run that was not stopped.

    graftlab.core.train.checkpoints.list_resumable calls a run finished only when its last
    checkpoint is at max_steps, but a run that trains to the end writes no final checkpoint.
    """
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(fh.seek(0, 2) - 4096, 0))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return False
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        return data.get("event") == "finished" and not data.get("stopped_early", True)
    return False


def scan_runs(roots: list[str]) -> list[RunRow]:
    """Resumable runs under each root (and each root itself), newest first; background thread."""
    from graftlab.core.train.checkpoints import list_resumable

    seen: set[Path] = set()
    rows: list[RunRow] = []
    for root in roots:
        for run in list_resumable(Path(root)):
            key = run.run_dir.resolve()
            if key in seen:
                continue
            seen.add(key)
            ckpt = run.run_dir / "checkpoints" / f"checkpoint-{run.step}"
            try:
                saved_at = ckpt.stat().st_mtime
            except OSError:
                saved_at = 0.0
            rows.append(RunRow(run.run_dir, run.step, run.max_steps,
                               run.finished or completed(run.run_dir), saved_at))
    rows.sort(key=lambda r: r.saved_at, reverse=True)
    return rows


class ResumeDialog(QDialog):
    """Lists resumable runs under `roots`; `chosen_run()` after `accepted`."""

    scanned = Signal()

    def __init__(self, roots: list[str | Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Resume run")
        self.setObjectName("resumeDialog")
        self.setMinimumSize(720, 360)
        self.roots: list[str] = []
        for r in roots:
            if str(r) not in self.roots:
                self.roots.append(str(r))
        self.rows: list[RunRow] = []
        self._scanning_roots: list[str] = []
        self._call = BackgroundCall(self)
        self._call.succeeded.connect(self._on_scan_succeeded)
        self._call.failed.connect(self._on_scan_failed)

        self.roots_label = QLabel(wordWrap=True)
        self.roots_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_button = QPushButton("Look in folder…")
        self.add_button.setToolTip("Also list the runs in another folder")
        self.add_button.clicked.connect(self._on_add_clicked)
        top = QHBoxLayout()
        top.addWidget(self.roots_label, 1)
        top.addWidget(self.add_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(self._on_double_clicked)
        self.status_label = QLabel("Looking for runs…", wordWrap=True)

        self.buttons = QDialogButtonBox()
        self.resume_button = self.buttons.addButton("Resume",
                                                    QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.resume_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status_label)
        layout.addWidget(self.buttons)
        self.rescan()

    # ---- scanning -----------------------------------------------------------------------------
    def is_scanning(self) -> bool:
        return self._call.is_running()

    def add_root(self, folder: str | Path) -> None:
        if str(folder) not in self.roots:
            self.roots.append(str(folder))
        self.rescan()

    def rescan(self) -> None:
        self.roots_label.setText("Runs in: " + "; ".join(self.roots) if self.roots else
                                 "Choose a folder that holds runs.")
        if self._call.is_running():
            return  # the scan in flight is followed by another one when the roots changed
        self.status_label.setText("Looking for runs…")
        self._scanning_roots = list(self.roots)
        self._call.start(scan_runs, self._scanning_roots)

    @Slot(object)
    def _on_scan_succeeded(self, rows: list[RunRow]) -> None:
        if self._scanning_roots != self.roots:
            self.rescan()
            return
        self._fill(rows)
        self.scanned.emit()

    @Slot(object)
    def _on_scan_failed(self, exc: object) -> None:
        self._fill([])
        self.status_label.setText(f"Could not list the runs: {exc}")
        self.scanned.emit()

    def _fill(self, rows: list[RunRow]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            name = QTableWidgetItem(str(row.run_dir))
            name.setToolTip(str(row.run_dir))
            self.table.setItem(i, 0, name)
            bar = QProgressBar(minimum=0, maximum=max(row.max_steps, 1),
                               value=min(row.step, max(row.max_steps, 1)), textVisible=True)
            bar.setFormat(f"step {row.step} / {row.max_steps}")
            self.table.setCellWidget(i, 1, bar)
            self.table.setItem(i, 1, QTableWidgetItem(f"{row.step} / {row.max_steps}"))
            when = dt.datetime.fromtimestamp(row.saved_at).strftime("%Y-%m-%d %H:%M") \
                if row.saved_at else "?"
            self.table.setItem(i, 2, QTableWidgetItem(when))
            self.table.setItem(i, 3, QTableWidgetItem("finished" if row.finished
                                                      else "resumable"))
            if row.finished:  # nothing left to train: listed for reference only
                for col in (0, 2, 3):
                    item = self.table.item(i, col)
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
                    item.setToolTip("This run trained to the end and saved its adapter.")
        n = sum(not r.finished for r in rows)
        self.status_label.setText(f"{n} resumable run{'s' if n != 1 else ''}." if rows else
                                  "No resumable runs here: a run becomes resumable once it "
                                  "has written a checkpoint (training.checkpoint_every, or "
                                  "Stop).")
        first = next((i for i, r in enumerate(rows) if not r.finished), None)
        if first is not None:
            self.table.selectRow(first)
        self._update_buttons()

    # ---- choosing -----------------------------------------------------------------------------
    def select_run(self, run_dir: str | Path) -> bool:
        want = Path(run_dir).resolve()
        for i, row in enumerate(self.rows):
            if row.run_dir.resolve() == want and not row.finished:
                self.table.selectRow(i)
                return True
        return False

    def chosen_run(self) -> Path | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        row = self.rows[rows[0].row()]
        return None if row.finished else row.run_dir

    @Slot()
    def _update_buttons(self) -> None:
        self.resume_button.setEnabled(self.chosen_run() is not None)

    @Slot(int, int)
    def _on_double_clicked(self, _row: int, _col: int) -> None:
        if self.chosen_run() is not None:
            self.accept()

    @Slot()
    def _on_add_clicked(self) -> None:
        start = self.roots[-1] if self.roots else str(Path.cwd())
        folder = QFileDialog.getExistingDirectory(self, "Folder with runs", start)
        if folder:
            self.add_root(folder)

    def done(self, result: int) -> None:
        self._call.wait(30_000)  # never drop a scan thread that is still running
        super().done(result)
