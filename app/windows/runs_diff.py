"""The runs library's config diff: the run.yaml files of the selected runs side by side, one
row per key (``training.learning_rate``), one column per run, the keys whose values differ
highlighted and, in them, the values that differ from the first run's in bold.

Each run's folder (``training.output_dir``) always differs, so it is listed only with "Only
differences" off. The comparison itself is graftlab.core.train.run_diff (no Qt); this module
shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graftlab.core.train.run_diff import DiffRow, diff_configs, format_value
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Slot
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

_Index = QModelIndex | QPersistentModelIndex
HIGHLIGHT = QColor(255, 184, 0, 70)  # amber, see-through: readable on light and dark palettes
ALWAYS_DIFFERENT = ("training.output_dir",)  # every run has its own folder


class DiffModel(QAbstractTableModel):
    """Rows: keys (all, or only those that differ); columns: the key, then one per run."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.names: list[str] = []
        self.colours: list[QColor] = []
        self.all_rows: list[DiffRow] = []
        self.rows: list[DiffRow] = []
        self.only_differences = True
        self._bold = QFont()
        self._bold.setBold(True)

    def set_configs(self, names: Sequence[str], colours: Sequence[QColor],
                    configs: Sequence[dict[str, Any]]) -> None:
        self.beginResetModel()
        self.names, self.colours = list(names), list(colours)
        self.all_rows = diff_configs(configs) if configs else []
        self._filter()
        self.endResetModel()

    def set_only_differences(self, on: bool) -> None:
        self.beginResetModel()
        self.only_differences = on
        self._filter()
        self.endResetModel()

    def _filter(self) -> None:
        self.rows = [r for r in self.all_rows if not self.only_differences
                     or (r.differs and r.key not in ALWAYS_DIFFERENT)]

    def differing_keys(self) -> list[str]:
        """The keys whose values differ, but for those that always do (the run folder)."""
        return [r.key for r in self.all_rows if r.differs and r.key not in ALWAYS_DIFFERENT]

    # ---- Qt model -----------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else 1 + len(self.names)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return "Key" if section == 0 else self.names[section - 1]
        if role == Qt.ItemDataRole.DecorationRole and section > 0:
            return self.colours[section - 1]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = self.rows[index.row()], index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            if col == 0:
                return row.key
            value = row.values[col - 1]
            if role == Qt.ItemDataRole.ToolTipRole:
                full = "\n".join(map(str, value)) if isinstance(value, list) and value \
                    else format_value(value)
                return f"{self.names[col - 1]}, {row.key}:\n{full}"
            return format_value(value, short=True)
        if role == Qt.ItemDataRole.BackgroundRole and row.differs:
            return HIGHLIGHT
        if role == Qt.ItemDataRole.FontRole and (
                (col == 0 and row.differs)
                or (col > 1 and row.values[col - 1] != row.values[0])):
            return self._bold
        return None


class ConfigDiffView(QWidget):
    """The diff table with "Only differences" and a one-line summary."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = DiffModel(self)
        self.table = QTableView()
        self.table.setObjectName("configDiff")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.only_box = QCheckBox("Only differences")
        self.only_box.setChecked(True)
        self.only_box.toggled.connect(self._on_only_toggled)
        self.summary = QLabel("Select two or more runs to compare their run.yaml files.")
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.only_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def show_configs(self, names: Sequence[str], colours: Sequence[QColor],
                     configs: Sequence[dict[str, Any]]) -> None:
        self.model.set_configs(names, colours, configs)
        n, differ = len(self.model.all_rows), len(self.model.differing_keys())
        if len(configs) < 2:
            self.summary.setText("Select two or more runs to compare their run.yaml files."
                                 if not configs else f"{n} keys (select another run to compare)")
        else:
            self.summary.setText(f"{differ} of {n} keys differ between {len(configs)} runs"
                                 if differ else f"The {len(configs)} run.yaml files are the same "
                                 f"but for their run folders ({n} keys)")
        self._fit_columns()

    def _fit_columns(self) -> None:
        """The key column fits its keys; the run columns share the rest."""
        view = self.table
        runs = len(self.model.names)
        if not runs:
            return
        view.resizeColumnToContents(0)
        key_width = min(view.columnWidth(0), 260)
        view.setColumnWidth(0, key_width)
        room = max(view.viewport().width() - key_width, 120 * runs)
        for c in range(1, runs + 1):
            view.setColumnWidth(c, max(room // runs, 90))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_columns()

    @Slot(bool)
    def _on_only_toggled(self, on: bool) -> None:
        self.model.set_only_differences(on)
        self._fit_columns()
