"""The adapter inspector's tables and background reads: a sortable table model over plain row
objects (modules of an adapter, a comparison of two), its columns, and the reads that run off
the GUI thread (graftlab.core.adapter.info and compat).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graftlab.app.plots.heatmap_grid import format_value
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

_Index = QModelIndex | QPersistentModelIndex
Column = tuple[str, Callable[[Any], Any], Callable[[Any], str]]


def _num(v: Any) -> str:
    return format_value(v) if isinstance(v, float) else "–" if v is None else f"{v:,}"


def _base_config(base_model: str | None) -> dict[str, Any] | None:
    """The base model's config.json when it is on this machine (local folder, cache, demo)."""
    if not base_model:
        return None
    try:
        from graftlab.core.model.sources import resolve_source

        path = Path(resolve_source(base_model).path)
        cfg = path if path.is_file() else path / "config.json"
        return json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else None
    except Exception:  # not available offline, or not a model: the rules run without it
        return None


def read_and_check(folder: str) -> tuple[Any, list[Any]]:
    """Background job: the adapter and its compatibility findings."""
    from graftlab.core.adapter.compat import check_adapter
    from graftlab.core.adapter.info import read_adapter

    info = read_adapter(folder)
    return info, check_adapter(info, _base_config(info.base_model))


def compare(a: Any, b: str) -> Any:
    from graftlab.core.adapter.info import compare_adapters

    return compare_adapters(a, b)


class RowsModel(QAbstractTableModel):
    """Rows of any objects shown through (header, value, text) columns; sorts by value."""

    def __init__(self, columns: Sequence[Column], parent: Any = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.rows: list[Any] = []

    def set_rows(self, rows: list[Any]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section][0]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        _h, get, fmt = self.columns[index.column()]
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return fmt(get(row))
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 0:
            return str(get(row))
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        get = self.columns[column][1]
        self.layoutAboutToBeChanged.emit()
        present = [r for r in self.rows if get(r) is not None]
        missing = [r for r in self.rows if get(r) is None]  # always last
        present.sort(key=get, reverse=order == Qt.SortOrder.DescendingOrder)
        self.rows = present + missing
        self.layoutChanged.emit()

    def row_of(self, predicate: Callable[[Any], bool]) -> int:
        return next((i for i, r in enumerate(self.rows) if predicate(r)), -1)


MODULE_COLUMNS: list[Column] = [
    ("Module", lambda m: m.name, str),
    ("Rank", lambda m: m.rank, _num),
    ("Alpha", lambda m: m.alpha, lambda v: f"{v:g}"),
    ("Scale", lambda m: m.scale, lambda v: f"{v:.4g}"),
    ("Params", lambda m: m.params, _num),
    ("Dtype", lambda m: m.dtype, str),
    ("‖ΔW‖_F", lambda m: m.delta_norm, _num),
    ("Eff. rank", lambda m: m.effective_rank, lambda v: f"{v:.2f}"),
]
COMPARE_COLUMNS: list[Column] = [
    ("Module", lambda c: c.name, str),
    ("‖ΔW‖ A", lambda c: c.norm_a, _num),
    ("‖ΔW‖ B", lambda c: c.norm_b, _num),
    ("Ratio B/A", lambda c: c.norm_ratio, lambda v: "–" if v is None else f"{v:.3g}"),
    ("Cosine", lambda c: c.cosine, lambda v: "–" if v is None else f"{v:+.3f}"),
]


def make_table(model: RowsModel) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setSortingEnabled(True)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 6)
    view.setAlternatingRowColors(True)
    header = view.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    for c in range(1, model.columnCount()):
        header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
    return view
