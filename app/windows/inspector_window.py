"""The adapter inspector: open any PEFT LoRA adapter folder and see what it changes.

Reading runs in a background thread (graftlab.core.adapter.info.read_adapter loads every
factor and takes an r×r SVD per module). The window shows the base model, variant and totals, a
sortable table of modules, the singular-value spectrum of the selected module, the layer
heatmap of ‖ΔW‖_F, the export compatibility findings
(graftlab.core.adapter.compat.check_adapter) with their sources, and a comparison with a
second adapter. A folder that is not an adapter shows the core's one sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from graftlab.app.errors import ErrorLabel
from graftlab.app.numbers import compact, exact
from graftlab.app.numbers import size_bytes as human_bytes
from graftlab.app.panels.adapter_panel import style_plot
from graftlab.app.plots.heatmap import HeatmapWidget
from graftlab.app.plots.heatmap_grid import format_value, grid_from_adapter
from graftlab.app.run.background import BackgroundCall
from graftlab.app.windows.drops import accept_local_files, dropped_paths
from graftlab.app.windows.inspector_tables import (
    COMPARE_COLUMNS,
    MODULE_COLUMNS,
    RowsModel,
    compare,
    make_table,
    read_and_check,
)
from graftlab.core.errors import UserError
from PySide6.QtCore import (
    QItemSelectionModel,
    Qt,
    Slot,
)
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)


class InspectorWindow(QMainWindow):
    """Inspect one adapter folder; compare it with a second one."""

    def __init__(self, parent: QWidget | None = None, start_dir: str = "") -> None:
        super().__init__(parent)
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.setWindowTitle("Adapter inspector — Graftlab")
        self.setAcceptDrops(True)
        self.resize(1180, 820)
        self.start_dir = start_dir
        self.info: Any = None
        self.issues: list[Any] = []
        self.comparison: Any = None
        self._pending_compare: str | None = None
        self._read = BackgroundCall(self)
        self._read.succeeded.connect(self._on_read_succeeded)
        self._read.failed.connect(self._on_read_failed)
        self._compare = BackgroundCall(self)
        self._compare.succeeded.connect(self._on_compare_succeeded)
        self._compare.failed.connect(self._on_compare_failed)

        top, summary_box = self._build_header()
        modules_split = self._build_modules_page()
        self.heatmap = HeatmapWidget()
        self.heatmap.value_label = "Update norm ‖scale·B·A‖_F"
        self.heatmap.module_clicked.connect(self.select_module)
        self.compat_table = self._build_compat_table()
        self.compare_page = self._build_compare_page()
        self.tabs = QTabWidget()
        self.tabs.addTab(modules_split, "Modules")
        self.tabs.addTab(self.heatmap, "Heatmap")
        self.tabs.addTab(self.compat_table, "Compatibility")
        self.tabs.addTab(self.compare_page, "Compare")

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(top)
        layout.addWidget(self.error_label)
        layout.addWidget(summary_box)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

    def _build_header(self) -> tuple[QHBoxLayout, QGroupBox]:
        """Open and Compare buttons with the folder's path; the adapter's summary."""
        self.open_button = QPushButton("Open adapter…")
        self.open_button.setShortcut(QKeySequence.StandardKey.Open)
        self.open_button.setToolTip("Choose a PEFT LoRA adapter folder (adapter_config.json + "
                                    "adapter_model.safetensors); or drop one on this window")
        self.open_button.clicked.connect(self._on_open_clicked)
        self.compare_button = QPushButton("Compare with…")
        self.compare_button.setToolTip("Choose a second adapter: common modules with cosine "
                                       "similarity and norm ratio of their updates")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._on_compare_clicked)
        self.path_label = QLabel("Drop an adapter folder here, or open one.")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = ErrorLabel()
        top = QHBoxLayout()
        top.addWidget(self.open_button)
        top.addWidget(self.compare_button)
        top.addWidget(self.path_label, 1)
        self.summary: dict[str, QLabel] = {}
        summary_box = QGroupBox("Adapter")
        form = QFormLayout(summary_box)
        for key in ("Base model", "Variant", "Rank / alpha", "Modules", "Parameters",
                    "File size", "Fully trained"):
            label = QLabel("–")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            self.summary[key] = label
            form.addRow(key, label)
        return top, summary_box

    def _build_modules_page(self) -> QSplitter:
        """The modules table over the selected module's singular-value spectrum."""
        self.modules_model = RowsModel(MODULE_COLUMNS, self)
        self.table = make_table(self.modules_model)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection)
        self.spectrum = pg.PlotWidget()
        style_plot(self.spectrum)
        self.spectrum.setMenuEnabled(False)
        self.spectrum.getPlotItem().setLabel("bottom", "singular value index")
        self.spectrum.getPlotItem().setLabel("left", "σ of scale·B·A")
        self.spectrum.getPlotItem().showGrid(y=True, alpha=0.15)
        self._bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush="#3d7cc9")
        self.spectrum.addItem(self._bars)
        self.spectrum_label = QLabel("Select a module to see its singular-value spectrum.")
        spec_box = QWidget()
        spec_layout = QVBoxLayout(spec_box)
        spec_layout.setContentsMargins(0, 0, 0, 0)
        spec_layout.addWidget(self.spectrum_label)
        spec_layout.addWidget(self.spectrum, 1)
        modules_split = QSplitter(Qt.Orientation.Vertical)
        modules_split.addWidget(self.table)
        modules_split.addWidget(spec_box)
        modules_split.setSizes([460, 240])
        return modules_split

    @staticmethod
    def _build_compat_table() -> QTableWidget:
        table = QTableWidget(0, 4)
        table.setHorizontalHeaderLabels(["Severity", "Tool", "Warning", "Source"])
        table.verticalHeader().setVisible(False)
        table.setWordWrap(True)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        ch = table.horizontalHeader()
        ch.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        ch.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        ch.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        ch.setSectionResizeMode(3, QHeaderView.ResizeMode.Interactive)
        ch.resizeSection(3, 230)
        return table

    def _build_compare_page(self) -> QWidget:
        """A comparison with a second adapter: common modules, and those only in one."""
        self.compare_label = QLabel("Choose “Compare with…” to compare this adapter with "
                                    "another one.")
        self.compare_label.setWordWrap(True)
        self.compare_model = RowsModel(COMPARE_COLUMNS, self)
        self.compare_table = make_table(self.compare_model)
        self.only_a = QListWidget()
        self.only_b = QListWidget()
        lists = QHBoxLayout()
        for title, widget in (("Only in A", self.only_a), ("Only in B", self.only_b)):
            box = QGroupBox(title)
            QVBoxLayout(box).addWidget(widget)
            lists.addWidget(box)
        compare_page = QWidget()
        cl = QVBoxLayout(compare_page)
        cl.addWidget(self.compare_label)
        cl.addWidget(self.compare_table, 3)
        cl.addLayout(lists, 1)
        return compare_page

    # ---- loading ----------------------------------------------------------------------------
    def is_busy(self) -> bool:
        return self._read.is_running() or self._compare.is_running()

    def open_folder(self, folder: str | Path, compare_with: str | Path | None = None) -> None:
        """Read `folder` in the background (then compare with `compare_with`, if given)."""
        if self._read.is_running():
            self.error_label.show_message("Still reading the previous adapter; try again in a "
                                          "moment.")
            return
        folder = Path(folder)
        if folder.is_file():  # adapter_config.json or the safetensors file itself
            folder = folder.parent
        self.error_label.clear_message()
        self.path_label.setText(f"Reading {folder} …")
        self.open_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self._pending_compare = str(compare_with) if compare_with else None
        self._read.start(read_and_check, str(folder))

    @Slot(object)
    def _on_read_succeeded(self, result: tuple[Any, list[Any]]) -> None:
        self.open_button.setEnabled(True)
        self.info, self.issues = result
        self.comparison = None
        self._show_info()
        self.compare_button.setEnabled(True)
        if self._pending_compare:
            path, self._pending_compare = self._pending_compare, None
            self.compare_with(path)

    @Slot(object)
    def _on_read_failed(self, exc: BaseException) -> None:
        self.open_button.setEnabled(True)
        self.compare_button.setEnabled(self.info is not None)
        self._pending_compare = None
        self.path_label.setText(str(self.info.path) if self.info is not None else
                                "Drop an adapter folder here, or open one.")
        self.error_label.show_message(self._sentence(exc))

    @staticmethod
    def _sentence(exc: BaseException) -> str:
        if isinstance(exc, UserError):
            return exc.message
        return f"Could not read the adapter: {type(exc).__name__}: {exc}"

    def _show_info(self) -> None:
        info = self.info
        self.setWindowTitle(f"{info.path.name} — Adapter inspector")
        self.path_label.setText(str(info.path))
        s = self.summary
        s["Base model"].setText(info.base_model or "not recorded (base_model_name_or_path)")
        variant = {"lora": "LoRA", "rslora": "rsLoRA (scale α/√r)", "dora": "DoRA"}
        s["Variant"].setText(variant.get(info.variant, info.variant))
        ranks = sorted({m.rank for m in info.modules})
        pats = []
        if info.rank_pattern:
            pats.append(f"{len(info.rank_pattern)} rank patterns")
        if info.alpha_pattern:
            pats.append(f"{len(info.alpha_pattern)} alpha patterns")
        s["Rank / alpha"].setText(
            f"r = {info.rank}, α = {info.alpha:g}" + (f" · ranks used {', '.join(map(str, ranks))}"
                                                      if ranks != [info.rank] else "")
            + (f" · {', '.join(pats)}" if pats else ""))
        s["Modules"].setText(f"{len(info.modules):,} adapted modules")
        s["Parameters"].setText(f"{exact(info.total_params)} ({compact(info.total_params)}), "
                                f"{human_bytes(info.total_bytes)} of tensors")
        s["File size"].setText(human_bytes(info.file_size) + " (adapter_model.safetensors)")
        s["Fully trained"].setText(", ".join(f"{m.name} ({compact(m.params)})"
                                             for m in info.saved_modules) or "none")
        self.modules_model.set_rows(info.modules)
        self.heatmap.set_grid(*grid_from_adapter(info))
        self.heatmap.set_values({m.name: m.delta_norm for m in info.modules})
        self._show_issues()
        self.tabs.setTabText(2, f"Compatibility ({len(self.issues)})")
        self._clear_compare()
        if info.modules:
            self.select_module(info.modules[0].name)

    def _show_issues(self) -> None:
        t = self.compat_table
        t.setRowCount(max(len(self.issues), 1))
        if not self.issues:
            t.setSpan(0, 0, 1, 4)
            t.setItem(0, 0, QTableWidgetItem("No findings: vLLM, llama.cpp and PEFT should "
                                             "load this adapter as it is."))
            return
        t.clearSpans()
        for row, issue in enumerate(self.issues):
            cells = (issue.severity, issue.target, issue.message, issue.source)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{issue.message}\n\nRule {issue.rule}; source: {issue.source}")
                if col == 0:
                    item.setForeground(Qt.GlobalColor.red if issue.severity == "error"
                                       else Qt.GlobalColor.darkYellow)
                t.setItem(row, col, item)
        t.resizeRowsToContents()

    # ---- module selection -------------------------------------------------------------------
    @Slot(str)
    def select_module(self, name: str) -> None:
        row = self.modules_model.row_of(lambda m: m.name == name)
        if row < 0:
            return
        index = self.modules_model.index(row, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)
        self.table.scrollTo(index)

    def selected_module(self) -> Any:
        rows = self.table.selectionModel().selectedRows()
        return self.modules_model.rows[rows[0].row()] if rows else None

    @Slot()
    def _on_table_selection(self, *_args: Any) -> None:
        m = self.selected_module()
        if m is None:
            return
        self.heatmap.set_highlight([m.name])
        sv = np.asarray(m.singular_values, dtype=float)
        self._bars.setOpts(x=np.arange(1, len(sv) + 1), height=sv, width=0.6)
        self.spectrum.getPlotItem().enableAutoRange()
        self.spectrum_label.setText(
            f"{m.name}: rank {m.rank}, effective rank {m.effective_rank:.2f}, "
            f"‖ΔW‖_F = {format_value(m.delta_norm)}"
            + (" (LoRA part; DoRA magnitude needs the base weight)" if m.dora else ""))

    def spectrum_values(self) -> list[float]:
        opts = self._bars.opts
        return [float(v) for v in np.asarray(opts.get("height", []), dtype=float)]

    # ---- compare ----------------------------------------------------------------------------
    def compare_with(self, folder: str | Path) -> None:
        if self.info is None or self._compare.is_running():
            return
        folder = Path(folder)
        if folder.is_file():
            folder = folder.parent
        self.error_label.clear_message()
        self.compare_label.setText(f"Comparing with {folder} …")
        self.compare_button.setEnabled(False)
        self.tabs.setCurrentWidget(self.compare_page)
        self._compare.start(compare, self.info, str(folder))

    @Slot(object)
    def _on_compare_succeeded(self, comparison: Any) -> None:
        self.compare_button.setEnabled(True)
        self.comparison = comparison
        c = comparison
        cos = [x.cosine for x in c.common if x.cosine is not None]
        mean = f"; mean cosine {sum(cos) / len(cos):+.3f}" if cos else ""
        self.compare_label.setText(
            f"A: {c.a.path}\nB: {c.b.path}\n{len(c.common):,} modules in both, "
            f"{len(c.only_a):,} only in A, {len(c.only_b):,} only in B{mean}. Cosine compares "
            "the directions of the two updates ΔW (1: same, 0: unrelated, −1: opposite).")
        self.compare_model.set_rows(c.common)
        self.only_a.clear()
        self.only_a.addItems(c.only_a)
        self.only_b.clear()
        self.only_b.addItems(c.only_b)

    @Slot(object)
    def _on_compare_failed(self, exc: BaseException) -> None:
        self.compare_button.setEnabled(True)
        self.compare_label.setText("Comparison failed.")
        self.error_label.show_message(self._sentence(exc))

    def _clear_compare(self) -> None:
        self.compare_model.set_rows([])
        self.only_a.clear()
        self.only_b.clear()
        self.compare_label.setText("Choose “Compare with…” to compare this adapter with "
                                   "another one.")

    # ---- dialogs, drag and drop, closing ----------------------------------------------------
    def _ask_folder(self, title: str) -> str:
        start = str(self.info.path.parent) if self.info is not None else self.start_dir
        return QFileDialog.getExistingDirectory(self, title, start)

    @Slot()
    def _on_open_clicked(self) -> None:
        folder = self._ask_folder("Open a LoRA adapter folder")
        if folder:
            self.open_folder(folder)

    @Slot()
    def _on_compare_clicked(self) -> None:
        folder = self._ask_folder("Compare with another adapter folder")
        if folder:
            self.compare_with(folder)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        accept_local_files(event)

    def dropEvent(self, event: QDropEvent) -> None:
        """One folder: inspect it. Two: inspect the first and compare with the second."""
        paths = dropped_paths(event)
        if paths:
            self.open_folder(paths[0], paths[1] if len(paths) > 1 else None)
        event.acceptProposedAction()

    def closeEvent(self, event: QCloseEvent) -> None:
        # Reading cannot be interrupted; it takes seconds at most, so closing waits for it
        # rather than leaving a thread behind.
        self._read.wait(30_000)
        self._compare.wait(30_000)
        super().closeEvent(event)
