"""The runs library's table: one row per run folder (a RunSummary from
graftlab.core.train.run_index), and the proxy that sorts and filters it.

The model holds the summaries as they are and formats a cell only when the view asks for it
(only visible rows are asked), so 500 rows cost nothing until they scroll into view. Sorting
compares the raw values (steps, loss, dates), with empty cells last in either order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from graftlab.app.numbers import duration
from graftlab.core.train.run_index import RunSummary
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont, QIcon, QPixmap

_Index = QModelIndex | QPersistentModelIndex
ACTIVE = ("running", "paused")  # a live process writes into these folders
STATUS_COLOURS = {"running": "#2e9e4f", "paused": "#c98a00", "stopped": "#3b7dc4",
                  "failed": "#d33b36", "killed": "#b5562b"}  # finished: the palette's text
_EVAL_NAMES = {"accuracy": "acc", "f1_macro": "F1", "eval_loss": "loss"}


def _steps(r: RunSummary) -> str:
    return f"{r.steps:,} / {r.max_steps:,}" if r.max_steps else f"{r.steps:,}"


def _eval(r: RunSummary) -> str:
    if r.eval is None:
        return ""
    return f"{r.eval:.4f} {_EVAL_NAMES.get(r.eval_name, r.eval_name)}".strip()


def _date(r: RunSummary) -> str:
    if not r.started_at:
        return ""
    return dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")


# (header, text of a row, sort key of a row (None: empty, sorted last), tooltip)
Column = tuple[str, Callable[[RunSummary], str], Callable[[RunSummary], Any]]
COLUMNS: list[Column] = [
    ("Status", lambda r: r.status, lambda r: r.status),
    ("Run", lambda r: Path(r.run_dir).name, lambda r: Path(r.run_dir).name.lower()),
    ("Model", lambda r: r.model, lambda r: r.model.lower() or None),
    ("Targets", lambda r: r.targets, lambda r: r.targets or None),
    ("Steps", _steps, lambda r: r.steps),
    ("Final loss", lambda r: "" if r.final_loss is None else f"{r.final_loss:.4f}",
     lambda r: r.final_loss),
    ("Eval", _eval, lambda r: r.eval),
    ("Duration", lambda r: "" if r.duration_s is None else duration(r.duration_s),
     lambda r: r.duration_s),
    ("Started", _date, lambda r: r.started_at),
]
COLUMN = {c[0]: i for i, c in enumerate(COLUMNS)}
_NUMERIC = {COLUMN[n] for n in ("Steps", "Final loss", "Eval", "Duration")}


def display_names(run_dirs: Iterable[str]) -> dict[str, str]:
    """A short name per run: the folder's name, with its parent's where two names collide."""
    dirs = list(run_dirs)
    count: dict[str, int] = {}
    for d in dirs:
        count[Path(d).name] = count.get(Path(d).name, 0) + 1
    return {d: Path(d).name if count[Path(d).name] == 1 else
            f"{Path(d).parent.name}/{Path(d).name}" for d in dirs}


def _swatch(colour: QColor, size: int = 12) -> QIcon:
    """A square of `colour`, the same when its row is selected (a bare QColor is tinted)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(colour)
    icon = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        icon.addPixmap(pixmap, mode)
    return icon


class RunsTableModel(QAbstractTableModel):
    """Run summaries as rows (see the module docstring); `colours` marks the overlaid runs."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[RunSummary] = []
        self.colours: dict[str, QColor] = {}  # run_dir -> its colour in the overlay
        self._swatches: dict[str, QIcon] = {}
        self._bold = QFont()
        self._bold.setBold(True)

    # ---- contents -----------------------------------------------------------------------------
    def set_rows(self, rows: list[RunSummary]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def update_rows(self, fresh: Iterable[RunSummary]) -> None:
        """Replace the rows of the same run folders (a live run's progress)."""
        at = {r.run_dir: i for i, r in enumerate(self.rows)}
        for s in fresh:
            i = at.get(s.run_dir)
            if i is not None:
                self.rows[i] = s
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

    def remove_runs(self, run_dirs: Iterable[str]) -> None:
        gone = set(run_dirs)
        for i in reversed(range(len(self.rows))):
            if self.rows[i].run_dir in gone:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self.rows[i]
                self.endRemoveRows()

    def set_colours(self, colours: dict[str, QColor]) -> None:
        self.colours = dict(colours)
        self._swatches = {d: _swatch(c) for d, c in colours.items()}
        if self.rows:
            col = COLUMN["Run"]
            self.dataChanged.emit(self.index(0, col), self.index(len(self.rows) - 1, col))

    def row_of(self, run_dir: str) -> int:
        return next((i for i, r in enumerate(self.rows) if r.run_dir == run_dir), -1)

    # ---- Qt model -----------------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[col][1](row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        if role == Qt.ItemDataRole.ForegroundRole and col == 0 and row.status in STATUS_COLOURS:
            return QColor(STATUS_COLOURS[row.status])
        if role == Qt.ItemDataRole.DecorationRole and col == COLUMN["Run"]:
            return self._swatches.get(row.run_dir)
        if role == Qt.ItemDataRole.FontRole and col == COLUMN["Run"] \
                and row.run_dir in self.colours:
            return self._bold
        if role == Qt.ItemDataRole.TextAlignmentRole and col in _NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _tooltip(self, row: RunSummary, col: int) -> str:
        if col == 0 and row.message:
            return f"{row.status}: {row.message}"
        if col == COLUMN["Run"]:
            return row.run_dir + (f"\nadapter: {row.adapter}" if row.adapter else "")
        if col == COLUMN["Eval"] and row.eval_name:
            return row.eval_name
        return COLUMNS[col][1](row)


class RunsFilterProxy(QSortFilterProxyModel):
    """Sorts by raw values (empty cells last) and keeps the rows that match the filter text
    (every word somewhere in the run's name, path, model, targets, status or message) and the
    status filter ("" for any status)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._words: list[str] = []
        self._status = ""

    def set_text(self, text: str) -> None:
        self._change_filter(lambda: setattr(self, "_words", text.lower().split()))

    def set_status(self, status: str) -> None:
        self._change_filter(lambda: setattr(self, "_status", status))

    def _change_filter(self, change: Callable[[], None]) -> None:
        if hasattr(self, "endFilterChange"):  # Qt >= 6.10; invalidateRowsFilter is deprecated
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            change()
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        r: RunSummary = self.sourceModel().rows[source_row]
        if self._status and r.status != self._status:
            return False
        if not self._words:
            return True
        hay = " ".join((r.run_dir, r.model, r.targets, r.status, r.message)).lower()
        return all(w in hay for w in self._words)

    def lessThan(self, left: _Index, right: _Index) -> bool:
        rows = self.sourceModel().rows
        key = COLUMNS[left.column()][2]
        a, b = key(rows[left.row()]), key(rows[right.row()])
        if a is None or b is None:  # empty cells last, ascending or descending
            return (a is not None) == (self.sortOrder() == Qt.SortOrder.AscendingOrder) \
                and a is not b
        return a < b
