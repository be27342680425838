"""The Heatmap tab: the layer heatmap fed by the current plan, a live run's `UpdateNorms`
events, or a finished run's metrics.jsonl; click-through to and from the layer tree."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graftlab.app.errors import ErrorLabel
from graftlab.app.plots.heatmap import HeatmapWidget
from graftlab.app.plots.heatmap_grid import grid_from_names, grid_from_tree
from graftlab.core.train.events import Event, Finished, Started, UpdateNorms, read_metrics
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

MODES = (("plan", "Rank (plan)"), ("values", "Update size ‖ΔW‖/‖W‖"))


class HeatmapPanel(QWidget):
    """Heatmap plus a colour-by choice, a status line and Open run / Inspect buttons."""

    inspect_requested = Signal(str)
    """The user wants the inspector on this adapter folder (a finished run's adapter)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.heatmap = HeatmapWidget()
        self.mode_combo = QComboBox()
        for key, label in MODES:
            self.mode_combo.addItem(label, key)
        self.mode_combo.setToolTip("Colour cells by the planned rank, or by the relative update "
                                   "size of the last UpdateNorms event (log scale)")
        self.mode_combo.currentIndexChanged.connect(self._on_mode_changed)
        self.status_label = QLabel("Open a model to see its layers.")
        self.status_label.setWordWrap(True)
        self.error_label = ErrorLabel()
        self.open_button = QPushButton("Open run…")
        self.open_button.setToolTip("Show the last update sizes of a finished run "
                                    "(its metrics.jsonl)")
        self.open_button.clicked.connect(self._on_open_clicked)
        self.inspect_button = QPushButton("Inspect adapter")
        self.inspect_button.setToolTip("Open the trained adapter in the inspector")
        self.inspect_button.setEnabled(False)
        self.inspect_button.clicked.connect(self._on_inspect_clicked)
        top = QHBoxLayout()
        top.addWidget(QLabel("Colour by"))
        top.addWidget(self.mode_combo)
        top.addStretch(1)
        top.addWidget(self.open_button)
        top.addWidget(self.inspect_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self.heatmap, 1)
        self._tree: Any = None
        self._names_grid = False  # the grid was built from a metrics file, not the tree
        self.adapter_dir: str | None = None
        self._layer_tree: Any = None
        self._syncing = False
        self._update_mode_combo()

    # ---- inputs -----------------------------------------------------------------------------
    def show_plan(self, tree: Any, plan: Any) -> None:
        """The current model and adapter plan (None: nothing ticked or an error)."""
        if tree is not self._tree or self._names_grid:
            self._tree, self._names_grid = tree, False
            if tree is None:
                self.heatmap.set_grid(0, [], [])
            else:
                self.heatmap.set_grid(*grid_from_tree(tree))
        adapters = {m.name: (m.rank, m.alpha, m.params) for m in plan.modules} if plan else {}
        self.heatmap.set_adapters(adapters)
        self.heatmap.set_mode("plan")
        if tree is None:
            self.status_label.setText("Open a model to see its layers.")
        else:
            self.status_label.setText(
                f"{len(adapters):,} of {len(self.heatmap.names()):,} modules get adapters · "
                f"{tree.num_layers} layers × {len(tree.kinds())} kinds. Click a cell to find "
                "it in the layer tree.")
        self._update_mode_combo()

    @Slot(object)
    def append_events(self, batch: Iterable[Event]) -> None:
        """Runner events: the last UpdateNorms of the batch is drawn (once per batch)."""
        last: UpdateNorms | None = None
        for ev in batch:
            if isinstance(ev, Started):
                self.heatmap.clear_values()
                self.adapter_dir = None
                self.inspect_button.setEnabled(False)
                self.status_label.setText("Training: update sizes appear every "
                                          "update_norms_every steps.")
            elif isinstance(ev, UpdateNorms):
                last = ev
            elif isinstance(ev, Finished) and ev.adapter_dir:
                self.adapter_dir = ev.adapter_dir
                self.inspect_button.setEnabled(True)
        if last is not None:
            self._show_norms(last)

    def _show_norms(self, ev: UpdateNorms) -> None:
        hit = self.heatmap.set_values(ev.sizes, ev.step)
        if ev.sizes and hit == 0:  # another model's run: lay the grid out from its names
            self._names_grid = True
            self.heatmap.set_grid(*grid_from_names(ev.sizes))
            hit = self.heatmap.set_values(ev.sizes, ev.step)
        values = [v for v in ev.sizes.values() if v > 0]
        span = f", {min(values):.2g} to {max(values):.2g}" if values else ""
        self.status_label.setText(f"Step {ev.step}: relative update size ‖ΔW‖_F / ‖W‖_F of "
                                  f"{hit:,} modules{span}.")
        self._update_mode_combo()

    def load_events(self, events: Iterable[Event], run_dir: str | Path | None = None) -> bool:
        """A finished run's events: show its last UpdateNorms. False when it has none."""
        events = list(events)
        norms = [e for e in events if isinstance(e, UpdateNorms)]
        finished = [e for e in events if isinstance(e, Finished) and e.adapter_dir]
        adapter = finished[-1].adapter_dir if finished else None
        if adapter is None and run_dir is not None and (Path(run_dir) / "adapter").is_dir():
            adapter = str(Path(run_dir) / "adapter")
        self.adapter_dir = adapter
        self.inspect_button.setEnabled(adapter is not None)
        if not norms:
            self.error_label.show_message("This run logged no update sizes (update_norms_every "
                                          "was 0, or it stopped before the first one).")
            return False
        self.error_label.clear_message()
        self._show_norms(norms[-1])
        return True

    def load_metrics(self, path: str | Path) -> bool:
        """metrics.jsonl, or a run folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / "metrics.jsonl"
        try:
            events = read_metrics(path)
        except OSError as exc:
            self.error_label.show_message(f"cannot read {path} ({exc.strerror}); choose a run "
                                          "folder's metrics.jsonl.")
            return False
        return self.load_events(events, path.parent)

    # ---- layer tree click-through -----------------------------------------------------------
    def attach_layer_tree(self, layer_tree: Any) -> None:
        """Clicking a cell selects the module in `layer_tree`; selecting there highlights."""
        self._layer_tree = layer_tree
        self.heatmap.module_clicked.connect(self.select_in_tree)
        layer_tree.view.selectionModel().selectionChanged.connect(self._on_tree_selection)

    @Slot(str)
    def select_in_tree(self, name: str) -> None:
        lt = self._layer_tree
        if lt is None:
            return
        index = lt.model.index_of(name)
        if not index.isValid():
            return
        flags = (QItemSelectionModel.SelectionFlag.ClearAndSelect
                 | QItemSelectionModel.SelectionFlag.Rows)
        lt.view.scrollTo(index)  # expands collapsed parents
        lt.view.selectionModel().setCurrentIndex(index, flags)

    @Slot(QItemSelection, QItemSelection)
    def _on_tree_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        lt = self._layer_tree
        names: list[str] = []
        shown = set(self.heatmap.names())
        for index in lt.view.selectionModel().selectedRows(0):
            name = lt.model.name_of(index)
            if name is None:
                continue
            if name in shown:
                names.append(name)
            else:  # a layer or block row: highlight what it holds
                names.extend(n for n in lt.model.descendants(name) if n in shown)
        self.heatmap.set_highlight(names)

    # ---- controls ---------------------------------------------------------------------------
    def _update_mode_combo(self) -> None:
        self._syncing = True
        has = self.heatmap.has_values()
        item = self.mode_combo.model().item(1)  # type: ignore[attr-defined]
        item.setEnabled(has)
        self.mode_combo.setCurrentIndex(1 if self.heatmap.mode == "values" and has else 0)
        self._syncing = False

    @Slot(int)
    def _on_mode_changed(self, _index: int) -> None:
        if not self._syncing:
            self.heatmap.set_mode(self.mode_combo.currentData())

    @Slot()
    def _on_open_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a run's metrics", "",
                                              "Run metrics (metrics.jsonl);;All files (*)")
        if path:
            self.load_metrics(path)

    @Slot()
    def _on_inspect_clicked(self) -> None:
        if self.adapter_dir:
            self.inspect_requested.emit(self.adapter_dir)
