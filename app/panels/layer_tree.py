"""The layer tree: a QTreeView over ModuleTreeModel with a filter box, presets, a layer range
and rank/alpha for a multi-row selection."""

from __future__ import annotations

import fnmatch
import re

from graftlab.app.errors import ErrorLabel, reports_errors
from graftlab.app.panels.tree_model import (
    ALPHA,
    NAME,
    PARAMS,
    RANK,
    SHAPE,
    TRAINABLE,
    TYPE,
    ModuleTreeModel,
)
from graftlab.core.errors import UserError
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeView,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

PRESETS = (("attention", "Attention"), ("mlp", "MLP"), ("all-linear", "All linear"),
           ("none", "None"))
_Index = QModelIndex | QPersistentModelIndex


class RankAlphaDelegate(QStyledItemDelegate):
    """Spin boxes wide enough to type a wrong value, so the core explains why it is wrong."""

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem,
                     index: _Index) -> QWidget:
        if index.column() == RANK:
            box = QSpinBox(parent)
            box.setRange(0, 1_000_000)
        else:
            box = QDoubleSpinBox(parent)
            box.setRange(0.0, 1e6)
            box.setDecimals(2)
        box.setFrame(False)
        return box


def compile_filter(text: str):
    """`*q_proj` (glob on the full name), `/regex/`, or plain text (substring) -> predicate."""
    text = text.strip()
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            rx = re.compile(text[1:-1])
        except re.error as exc:
            raise UserError(f"filter {text}: not a valid regular expression ({exc}); "
                            "fix it or use a glob such as *.q_proj.", field="filter") from None
        return lambda name: rx.search(name) is not None
    if any(c in text for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, text)
    return lambda name: text in name


class LayerTreeWidget(QWidget):
    """Everything for choosing which modules get adapters, around one QTreeView."""

    status = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ModuleTreeModel(self)
        self._matches: list[str] = []
        self._hidden: set[str] = set()

        self.filter_edit = QLineEdit(placeholderText="Filter modules: q_proj, *.mlp.*, /regex/")
        self.filter_edit.setClearButtonEnabled(True)
        self.match_label = QLabel("")
        self.tick_button = QPushButton("Tick matches")
        self.untick_button = QPushButton("Untick matches")
        self.tick_button.setToolTip("Tick every module the filter matches that can carry LoRA")
        self.untick_button.setToolTip("Untick every module the filter matches")
        self.filter_error = ErrorLabel()
        self.filter_edit.textChanged.connect(self._filter_when_quiet)
        self.filter_edit.returnPressed.connect(self.apply_filter)
        self.tick_button.clicked.connect(self.tick_matches)
        self.untick_button.clicked.connect(self.untick_matches)
        presets = self._build_presets()
        self._build_view()
        sel = self._build_selection_row()

        filt = QHBoxLayout()
        filt.addWidget(self.filter_edit, 1)
        filt.addWidget(self.match_label)
        filt.addWidget(self.tick_button)
        filt.addWidget(self.untick_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filt)
        layout.addWidget(self.filter_error)
        layout.addLayout(presets)
        layout.addWidget(self.view, 1)
        layout.addLayout(sel)
        self._update_filter_buttons()

    def _build_presets(self) -> QHBoxLayout:
        """Preset buttons and the layer range they tick."""
        self.preset_buttons: dict[str, QPushButton] = {}
        presets = QHBoxLayout()
        presets.addWidget(QLabel("Preset:"))
        for key, label in PRESETS:
            button = QPushButton(label)
            button.setToolTip(f"Tick exactly the {label.lower()} modules of the chosen layers"
                              if key != "none" else "Untick everything")
            button.clicked.connect(lambda _=False, k=key: self.apply_preset(k))
            self.preset_buttons[key] = button
            presets.addWidget(button)
        presets.addStretch(1)
        presets.addWidget(QLabel("Layers"))
        self.layer_from = QSpinBox()
        self.layer_to = QSpinBox()
        for box in (self.layer_from, self.layer_to):
            box.setRange(0, 0)
            box.setToolTip("Presets tick only these layers (inclusive)")
        presets.addWidget(self.layer_from)
        presets.addWidget(QLabel("to"))
        presets.addWidget(self.layer_to)
        return presets

    def _build_view(self) -> None:
        """The tree view: uniform rows (1,000+ modules), rank/alpha editable in place."""
        self.view = QTreeView()
        self.view.setModel(self.model)
        self.model.visible_nodes = self._visible_nodes
        self.view.setUniformRowHeights(True)  # constant-time layout for 1,000+ rows
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed
                                  | QAbstractItemView.EditTrigger.SelectedClicked)
        self.view.setItemDelegate(RankAlphaDelegate(self.view))
        self.view.setAllColumnsShowFocus(True)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(NAME, QHeaderView.ResizeMode.Stretch)
        fm = self.view.fontMetrics()
        widths = {TYPE: "LlamaDecoderLayer", SHAPE: "128256 × 8192", PARAMS: "70.55 B",
                  RANK: "Rank_", ALPHA: "Alpha_", TRAINABLE: "103,546,880"}
        for col, sample in widths.items():
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, fm.horizontalAdvance(sample) + 24)
        self.view.setMinimumWidth(420)

    def _build_selection_row(self) -> QHBoxLayout:
        """Rank and alpha for the selected rows."""
        self.sel_rank = QSpinBox(specialValueText="keep")
        self.sel_rank.setRange(0, 1_000_000)
        self.sel_rank.setToolTip("Rank for the selected rows (keep: leave the rank as is)")
        self.sel_alpha = QDoubleSpinBox(specialValueText="keep")
        self.sel_alpha.setRange(0.0, 1e6)
        self.sel_alpha.setDecimals(2)
        self.sel_alpha.setToolTip("Alpha for the selected rows (keep: leave alpha as is)")
        self.sel_apply = QPushButton("Set for selection")
        self.sel_reset = QPushButton("Reset")
        self.sel_reset.setToolTip("Selected modules go back to the adapter-wide rank and alpha")
        self.sel_apply.clicked.connect(self._on_apply_clicked)
        self.sel_reset.clicked.connect(self._on_reset_clicked)
        sel = QHBoxLayout()
        sel.addWidget(QLabel("Selected rows:"))
        sel.addWidget(QLabel("rank"))
        sel.addWidget(self.sel_rank)
        sel.addWidget(QLabel("alpha"))
        sel.addWidget(self.sel_alpha)
        sel.addWidget(self.sel_apply)
        sel.addWidget(self.sel_reset)
        sel.addStretch(1)
        return sel

    def _visible_nodes(self) -> set[int]:
        """Model ids of the rows on screen (about fifty), for bulk dataChanged."""
        out: set[int] = set()
        height = self.view.viewport().height()
        index = self.view.indexAt(QPoint(1, 1))
        while index.isValid() and len(out) < 1000:
            if self.view.visualRect(index).top() > height:
                break
            out.add(index.internalId())
            index = self.view.indexBelow(index)
        return out

    # ---- loading --------------------------------------------------------------------------
    def set_tree(self, tree) -> None:
        self._hidden.clear()
        self.model.set_tree(tree)
        last = max((tree.num_layers if tree else 1) - 1, 0)
        for box in (self.layer_from, self.layer_to):
            box.setRange(0, last)
        self.layer_from.setValue(0)
        self.layer_to.setValue(last)
        self.expand_default()
        if self.filter_edit.text().strip():
            self.apply_filter()
        else:
            self._matches = []
            self._update_filter_buttons()

    def expand_default(self) -> None:
        """Whole model for small trees; for big ones the top levels and the first layer."""
        tree = self.model.tree()
        if tree is None:
            return
        if len(tree.modules) <= 200:
            self.view.expandAll()
            return
        self.view.expandToDepth(1)
        first = next((n for n, m in tree.modules.items() if m.layer == 0), None)
        if first is not None:  # show what one repeated block holds
            index = self.model.index_of(first)
            self.view.expandRecursively(index)
            index = index.parent()
            while index.isValid():
                self.view.expand(index)
                index = index.parent()

    def layer_range(self) -> range | None:
        tree = self.model.tree()
        lo, hi = self.layer_from.value(), self.layer_to.value()
        if tree is None or (lo == 0 and hi >= tree.num_layers - 1):
            return None
        if lo > hi:
            raise UserError(f"layer range {lo} to {hi} is empty; make the first layer no "
                            "larger than the last.", field="layers")
        return range(lo, hi + 1)

    # ---- presets, filter, selection -------------------------------------------------------
    @reports_errors
    def apply_preset(self, name: str) -> None:
        tree = self.model.tree()
        if tree is None:
            raise UserError("open a model first; presets tick modules of its layer tree.")
        names = tree.preset(name, self.layer_range())
        self.model.set_selection(names)
        self.status.emit(f"Preset {name}: {len(names):,} modules ticked")

    @qdebounced(timeout=150)
    def _filter_when_quiet(self, *_text: str) -> None:
        self.apply_filter()

    @Slot()
    @reports_errors
    def apply_filter(self) -> None:
        self._filter_when_quiet.cancel()
        self.filter_error.clear_message()
        text = self.filter_edit.text().strip()
        tree = self.model.tree()
        if not text or tree is None:
            self._matches = []
            self._set_hidden(set())
            self.match_label.setText("")
            self._update_filter_buttons()
            return
        try:
            pred = compile_filter(text)
        except UserError as exc:
            self.filter_error.show_message(exc.message)
            self._matches = []
            self._update_filter_buttons()
            return
        self._matches = [n for n in tree.modules if n and pred(n)]
        visible: set[str] = set()
        for n in self._matches:
            visible.update(self.model.descendants(n))
            parent = tree.modules[n].parent
            while parent is not None and parent not in visible:
                visible.add(parent)
                parent = tree.modules[parent].parent
        self._set_hidden({n for n in tree.modules if n not in visible})
        for n in self._matches[:2000]:
            parent = tree.modules[n].parent
            if parent is not None:
                self.view.expand(self.model.index_of(parent))
        tickable = len(self.model.checkable_names(self._matches))
        self.match_label.setText(f"{len(self._matches):,} matches, {tickable:,} tickable")
        self._update_filter_buttons()

    def _set_hidden(self, hidden: set[str]) -> None:
        for name in self._hidden ^ hidden:
            index = self.model.index_of(name)
            if index.isValid():
                self.view.setRowHidden(index.row(), index.parent(), name in hidden)
        self._hidden = hidden

    def _update_filter_buttons(self) -> None:
        has = bool(self.model.checkable_names(self._matches))
        self.tick_button.setEnabled(has)
        self.untick_button.setEnabled(has)

    def matches(self) -> list[str]:
        return list(self._matches)

    @Slot()
    @reports_errors
    def tick_matches(self) -> None:
        self._tick_matches(True)

    @Slot()
    @reports_errors
    def untick_matches(self) -> None:
        self._tick_matches(False)

    def _tick_matches(self, checked: bool) -> None:
        if self.filter_edit.text().strip() and not self._matches:
            raise UserError(f"the filter {self.filter_edit.text().strip()!r} matches no module; "
                            "try a glob such as *q_proj or a /regex/.", field="filter")
        names = self.model.checkable_names(self._matches)
        changed = self.model.set_checked(names, checked)
        self.status.emit(f"{'Ticked' if checked else 'Unticked'} {changed:,} modules")

    def selected_targets(self) -> list[str]:
        """Selected tickable rows, plus the ticked modules under selected parent rows."""
        out: dict[str, None] = {}
        ticked = set(self.model.selected_names())
        for index in self.view.selectionModel().selectedRows(NAME):
            name = self.model.name_of(index)
            if name is None:
                continue
            if self.model.is_checkable(name):
                out.setdefault(name)
            else:
                for d in self.model.descendants(name):
                    if d in ticked:
                        out.setdefault(d)
        return list(out)

    def apply_to_selection(self, rank: int | None, alpha: float | None) -> int:
        targets = self.selected_targets()
        if not targets:
            raise UserError("select modules (or layers with ticked modules) in the tree first; "
                            "Ctrl+click and Shift+click select several.")
        self.model.set_overrides(targets, rank, alpha)
        return len(targets)

    @Slot()
    @reports_errors
    def _on_apply_clicked(self) -> None:
        rank = self.sel_rank.value() or None
        alpha = self.sel_alpha.value() or None
        if rank is None and alpha is None:
            raise UserError("set a rank or an alpha for the selection first (both say keep).")
        n = self.apply_to_selection(rank, alpha)
        self.status.emit(f"Set rank/alpha for {n:,} modules")

    @Slot()
    @reports_errors
    def _on_reset_clicked(self) -> None:
        self.model.clear_overrides(self.selected_targets())
