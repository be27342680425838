"""Training data: a file or demo set, its detected format (with an override), column mapping,
a preview of the first examples exactly as they will be trained (trained tokens highlighted),
a token-length histogram and counts. The preview is tokenised in the background."""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from graftlab.app.errors import ErrorLabel
from graftlab.app.panels.adapter_panel import static_plot
from graftlab.app.run.background import BackgroundJobs
from graftlab.core.config import DATA_FORMATS, DataConfig
from graftlab.core.errors import UserError
from graftlab.core.model.demo import DEMO_DATASETS
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

COLUMN_ROLES = (("text_column", "Text column", ("text", "classification")),
                ("prompt_column", "Prompt column", ("prompt-completion",)),
                ("completion_column", "Completion column", ("prompt-completion",)),
                ("messages_column", "Messages column", ("chat",)),
                ("label_column", "Label column", ("classification",)))
AUTO = "(auto)"
DATA_FILTER = "Data files (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"
_tokenizer_lock = threading.Lock()  # one fast tokenizer must not be used by two threads
_tokenizers: dict[str, Any] = {}


@dataclass
class PreviewResult:
    columns: list[str] = field(default_factory=list)
    detected: str | None = None
    examples: list[Any] = field(default_factory=list)
    stats: Any = None
    fmt: str | None = None
    error: UserError | None = None


def compute_preview(cfg: DataConfig, tokenizer_path: str | None, task: str) -> PreviewResult:
    """Runs in a background thread: columns, detected format, preview, length stats."""
    from graftlab.core.data import dataset as data

    result = PreviewResult()
    with _tokenizer_lock:
        raw = data.load_raw(cfg)  # a UserError here (missing file...) is the whole answer
        result.columns = list(raw.column_names)
        try:
            result.detected = data.detect_format(result.columns, task)
        except UserError:
            result.detected = None
        if tokenizer_path is None:
            result.error = UserError("the model has no tokenizer (a config.json holds the "
                                     "structure only); open a model folder to preview the "
                                     "tokens.", field="model.source")
            return result
        try:
            tok = _tokenizers.get(tokenizer_path)
            if tok is None:
                from transformers import AutoTokenizer

                try:
                    tok = AutoTokenizer.from_pretrained(tokenizer_path)
                except (OSError, ValueError) as exc:
                    raise UserError(f"cannot load the tokenizer of {tokenizer_path} "
                                    f"({type(exc).__name__}); the model folder needs its "
                                    "tokenizer files.", field="model.source") from None
                _tokenizers[tokenizer_path] = tok
            result.examples, result.stats, result.fmt = data.preview(cfg, tok, task, n=8)
        except UserError as exc:
            result.error = exc
    return result


def tokens_html(tokens: list[str], trained: list[bool], highlight: str, highlight_text: str,
                limit: int = 400) -> str:
    """Rich text: trained tokens on the highlight colour, token boundaries as thin gaps."""
    parts = []
    for text, on in zip(tokens[:limit], trained[:limit], strict=False):
        if not text:
            continue
        shown = html.escape(text).replace("\n", "↵<br>").replace(" ", "&nbsp;")
        if on:
            parts.append(f'<span style="background-color:{highlight}; color:{highlight_text};">'
                         f"{shown}</span>")
        else:
            parts.append(shown)
    more = f" … (+{len(tokens) - limit} tokens)" if len(tokens) > limit else ""
    return '<span style="white-space: pre-wrap;">' + "&#8203;".join(parts) + more + "</span>"


class DataPanel(QWidget):
    changed = Signal()
    """The data settings changed (the window marks the run as modified)."""

    def __init__(self, jobs: BackgroundJobs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs if jobs is not None else BackgroundJobs(self)
        self.last_dir = ""
        self._tokenizer_path: str | None = None
        self._task = "causal-lm"
        self._columns: list[str] = []
        self.result: PreviewResult | None = None
        self._loading = False
        self._build_editors()
        self.form = self._build_form()
        self._build_preview()

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(self.form)
        top_layout.addWidget(self.error_label)
        top_layout.addWidget(self.busy)
        top_layout.addWidget(self.counts_label)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.hist)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(top)
        layout.addWidget(split, 1)

        self._refresh_pending = False
        self.path_edit.editingFinished.connect(self._on_edited)
        self.format_combo.activated.connect(self._on_edited)
        for spin in (self.max_length_spin, self.eval_spin, self.max_examples_spin):
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._on_edited)
        self.set_values(DataConfig())

    def _build_editors(self) -> None:
        """The data source, format and size editors, and the status widgets under them."""
        self.path_edit = QLineEdit(placeholderText="A jsonl/json/csv/parquet/txt file, a hub "
                                                   "dataset or demo:stories")
        self.browse_button = QToolButton(text="Choose")
        self.browse_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.browse_button)
        menu.addAction("Data file…", self.browse_file)
        demos = menu.addMenu("Demo data")
        for name, fmt in DEMO_DATASETS.items():
            demos.addAction(f"{name} ({fmt})", lambda n=name: self.set_path(f"demo:{n}"))
        self.browse_button.setMenu(menu)
        self.format_combo = QComboBox()
        self.format_combo.addItems(DATA_FORMATS)
        self.detected_label = QLabel("")
        self.column_combos: dict[str, QComboBox] = {}
        self.max_length_spin = QSpinBox()
        self.max_length_spin.setRange(0, 1_000_000)
        self.max_length_spin.setSuffix(" tokens")
        self.eval_spin = QDoubleSpinBox()
        self.eval_spin.setRange(0.0, 1.0)
        self.eval_spin.setSingleStep(0.05)
        self.eval_spin.setToolTip("Share of examples held out for eval loss (0 to 0.5)")
        self.max_examples_spin = QSpinBox(specialValueText="all")
        self.max_examples_spin.setRange(0, 100_000_000)
        self.max_examples_spin.setToolTip("Use at most this many examples")
        self.error_label = ErrorLabel()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(8)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)

    def _build_form(self) -> QFormLayout:
        """The editors as a form, with one column chooser per role (text, prompt, label...)."""
        form = QFormLayout()
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(self.browse_button)
        form.addRow("Data", path_row)
        fmt_row = QHBoxLayout()
        fmt_row.addWidget(self.format_combo)
        fmt_row.addWidget(self.detected_label, 1)
        form.addRow("Format", fmt_row)
        for key, label, _ in COLUMN_ROLES:
            combo = QComboBox()
            combo.addItem(AUTO)
            combo.setToolTip("Which column holds this; (auto) picks it from the column names")
            combo.activated.connect(self._on_edited)
            self.column_combos[key] = combo
            form.addRow(label, combo)
        form.addRow("Max length", self.max_length_spin)
        form.addRow("Eval share", self.eval_spin)
        form.addRow("Max examples", self.max_examples_spin)
        return form

    def _build_preview(self) -> None:
        """The examples as trained (a table) and the histogram of their token counts."""
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Tokens", "Example as trained (highlighted "
                                              "tokens carry the loss)", "Note"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.hist = static_plot("tokens per example (before truncation)", "examples")
        self.hist.setMinimumHeight(120)
        self._hist_bar: pg.BarGraphItem | None = None
        self._max_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#e5534b", width=1,
                                                                 style=Qt.PenStyle.DashLine))
        self._max_line.setToolTip("max length: examples beyond it are truncated")

    # ---- values ---------------------------------------------------------------------------
    def values(self) -> DataConfig:
        cols = {k: (c.currentText() if c.currentText() != AUTO else None)
                for k, c in self.column_combos.items()}
        return DataConfig(path=self.path_edit.text().strip(),
                          format=self.format_combo.currentText(),
                          max_length=self.max_length_spin.value(),
                          eval_fraction=round(self.eval_spin.value(), 6),
                          max_examples=self.max_examples_spin.value() or None, **cols)

    def set_values(self, cfg: DataConfig) -> None:
        blockers = [self.format_combo, self.max_length_spin, self.eval_spin,
                    self.max_examples_spin, *self.column_combos.values()]
        for w in blockers:
            w.blockSignals(True)
        self.path_edit.setText(cfg.path)
        self.format_combo.setCurrentText(cfg.format)
        self.max_length_spin.setValue(cfg.max_length)
        self.eval_spin.setDecimals(max(2, len(f"{cfg.eval_fraction:g}".partition(".")[2])))
        self.eval_spin.setValue(cfg.eval_fraction)
        self.max_examples_spin.setValue(cfg.max_examples or 0)
        for key, combo in self.column_combos.items():
            self._fill_combo(combo, getattr(cfg, key))
        for w in blockers:
            w.blockSignals(False)
        self._update_rows()
        self.schedule_refresh()

    def _fill_combo(self, combo: QComboBox, current: str | None) -> None:
        combo.clear()
        combo.addItem(AUTO)
        combo.addItems(self._columns)
        if current and combo.findText(current) < 0:
            combo.addItem(current)  # a column name from run.yaml not (yet) seen in the file
        combo.setCurrentText(current or AUTO)

    def set_path(self, path: str) -> None:
        self.path_edit.setText(path)
        self._on_edited()

    def set_model(self, tokenizer_path: str | None, task: str) -> None:
        """The tokenizer and task the preview uses (from the loaded model)."""
        self._tokenizer_path, self._task = tokenizer_path, task
        self._update_rows()
        self.schedule_refresh()

    def _update_rows(self) -> None:
        fmt = self.format_combo.currentText()
        if fmt == "auto":
            fmt = (self.result.fmt if self.result and self.result.fmt else
                   self.result.detected if self.result else None) or "text"
        for i, (_, _, formats) in enumerate(COLUMN_ROLES):
            self.form.setRowVisible(2 + i, fmt in formats)

    def show_field_error(self, message: str) -> None:
        self.error_label.show_message(message)

    # ---- preview --------------------------------------------------------------------------
    @Slot()
    def _on_edited(self, *_: object) -> None:
        self._update_rows()
        self.schedule_refresh()
        self.changed.emit()

    def schedule_refresh(self) -> None:
        """Preview again once the edits have paused for 300 ms."""
        self._refresh_pending = True
        self._refresh_when_quiet()

    @qdebounced(timeout=300)
    def _refresh_when_quiet(self) -> None:
        self.refresh()

    def is_loading(self) -> bool:
        return self._loading or self._refresh_pending

    @Slot()
    def refresh(self) -> None:
        self._refresh_pending = False
        self._refresh_when_quiet.cancel()
        cfg = self.values()
        if not cfg.path:
            self.error_label.show_message("Choose a data file or a demo set such as "
                                          "demo:stories.")
            self._show_result(PreviewResult())
            return
        self._loading = True
        self.busy.show()
        path, task = self._tokenizer_path, self._task
        self.jobs.submit("data-preview", lambda: compute_preview(cfg, path, task),
                         self._on_preview, self._on_preview_failed)

    def _on_preview(self, result: PreviewResult) -> None:
        self._loading = False
        self.busy.hide()
        self._show_result(result)

    def _on_preview_failed(self, exc: BaseException, tb: str) -> None:
        self._loading = False
        self.busy.hide()
        if isinstance(exc, UserError):
            self._show_result(PreviewResult(error=exc))
        else:
            self._show_result(PreviewResult())
            from graftlab.app.errors import report

            report(self, exc, tb)

    def _show_result(self, result: PreviewResult) -> None:
        self.result = result
        if result.error is not None:
            self.error_label.show_message(result.error.message)
        elif self.path_edit.text().strip():
            self.error_label.clear_message()
        if result.columns and result.columns != self._columns:
            self._columns = result.columns
            for combo in self.column_combos.values():
                current = combo.currentText()
                combo.blockSignals(True)
                self._fill_combo(combo, None if current == AUTO else current)
                combo.blockSignals(False)
        if result.detected:
            self.detected_label.setText(f"detected: {result.detected}")
        else:
            self.detected_label.setText("")
        self._update_rows()
        self._fill_table(result)
        self._draw_histogram(result)

    def _fill_table(self, result: PreviewResult) -> None:
        pal = self.palette()
        hl = pal.color(QPalette.ColorRole.Highlight).name()
        hl_text = pal.color(QPalette.ColorRole.HighlightedText).name()
        self.table.setRowCount(len(result.examples))
        for row, ex in enumerate(result.examples):
            count = QTableWidgetItem(f"{ex.length:,}")
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            self.table.setItem(row, 0, count)
            label = QLabel(tokens_html(ex.tokens, ex.trained, hl, hl_text))
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setWordWrap(True)
            label.setContentsMargins(4, 2, 4, 2)
            self.table.setCellWidget(row, 1, label)
            notes = []
            if ex.label is not None:
                notes.append(f"label: {ex.label}")
            if ex.truncated:
                notes.append("truncated")
            if ex.dropped:
                notes.append("dropped (nothing to train)")
            self.table.setItem(row, 2, QTableWidgetItem(", ".join(notes)))
        self.table.resizeRowsToContents()
        s = result.stats
        if s is None:
            self.counts_label.setText("")
            return
        fmt = f"{result.fmt} format" if result.fmt else ""
        self.counts_label.setText(
            f"{fmt} · {s.count:,} examples (first 2,000 rows scanned) · "
            f"{s.num_truncated:,} truncated · {s.num_dropped:,} dropped · tokens per example: "
            f"min {s.min:,}, median {s.p50:,}, mean {s.mean:,.1f}, p95 {s.p95:,}, max {s.max:,}")

    def _draw_histogram(self, result: PreviewResult) -> None:
        item = self.hist.getPlotItem()
        if self._hist_bar is not None:
            item.removeItem(self._hist_bar)
            self._hist_bar = None
        if self._max_line.scene() is not None:
            item.removeItem(self._max_line)
        s = result.stats
        if s is None or not s.histogram:
            return
        starts = np.array([b[0] for b in s.histogram], dtype=float)
        ends = np.array([b[1] for b in s.histogram], dtype=float)
        counts = np.array([b[2] for b in s.histogram], dtype=float)
        brush = self.palette().color(QPalette.ColorRole.Highlight)
        self._hist_bar = pg.BarGraphItem(x0=starts, x1=ends, height=counts, brush=brush,
                                         pen=pg.mkPen(self.palette().color(
                                             QPalette.ColorRole.Base)))
        item.addItem(self._hist_bar)
        max_len = self.max_length_spin.value()
        if max_len <= ends.max() * 1.5:
            self._max_line.setPos(max_len)
            item.addItem(self._max_line)

    # ---- dialogs --------------------------------------------------------------------------
    @Slot()
    def browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose training data", self.last_dir,
                                              DATA_FILTER)
        if path:
            self.last_dir = str(Path(path).parent)
            self.set_path(path)
