"""The Monitor tab's task view: eval metrics over steps against the base model, the confusion
matrix of a classifier, and the samples the adapter wrote during training.

Fed with the same event batches as the loss plots (graftlab.core.train.events: `Eval`,
`Sample`). The base model's scores (an `Eval` with ``base: true``, computed once before training
with the adapters disabled) are drawn as dashed horizontal lines, so each curve reads against
where the model started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyqtgraph as pg
from graftlab.core.train.events import Eval, Event, Sample
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

# metric key -> (label, colour); which ones a run shows depends on its task
METRICS = {"accuracy": ("accuracy", "#2e86c1"), "f1_macro": ("macro-F1", "#8e44ad"),
           "perplexity": ("perplexity", "#e8711a")}


class EvalView(QWidget):
    """Task metrics by step with the base model's as dashed lines, and the confusion matrix."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: dict[str, tuple[list[float], list[float]]] = {}
        self.base: dict[str, float] = {}
        self.latest: Eval | None = None
        self.base_event: Eval | None = None
        self.plot = pg.PlotWidget(self)
        self.plot.setBackground(None)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("bottom", "step")
        self.legend = self.plot.addLegend(offset=(10, 5))
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.base_lines: dict[str, pg.InfiniteLine] = {}
        self.empty = QLabel("No evaluation yet: hold out part of the data (Data > eval "
                            "fraction) to see the task metric, against the base model, here.")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.matrix_plot = pg.PlotWidget(self)
        self.matrix_plot.setBackground(None)
        self.matrix_plot.setAspectLocked(True)
        self.matrix_plot.invertY(True)
        self.matrix_plot.setLabel("left", "true")
        self.matrix_plot.setLabel("bottom", "predicted")
        self.image = pg.ImageItem()
        self.image.setColorMap(pg.colormap.get("viridis"))
        self.matrix_plot.addItem(self.image)
        self.cell_texts: list[pg.TextItem] = []
        self.which = QComboBox()
        self.which.addItems(["adapted (latest eval)", "base model"])
        self.which.currentIndexChanged.connect(lambda _i: self._draw_matrix())
        self.matrix_title = QLabel("")
        matrix_box = QWidget(self)
        ml = QVBoxLayout(matrix_box)
        ml.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(QLabel("Confusion matrix:"))
        head.addWidget(self.which)
        head.addStretch(1)
        ml.addLayout(head)
        ml.addWidget(self.matrix_title)
        ml.addWidget(self.matrix_plot)
        self.matrix_box = matrix_box
        matrix_box.setMaximumWidth(320)
        matrix_box.hide()

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        left = QWidget(self)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.empty)
        ll.addWidget(self.plot)
        self.plot.hide()
        left.setMinimumWidth(240)
        layout.addWidget(left, 3)
        layout.addWidget(matrix_box, 2)

    def clear(self) -> None:
        self.points.clear()
        self.base.clear()
        self.latest = self.base_event = None
        for item in [*self.curves.values(), *self.base_lines.values()]:
            self.plot.removeItem(item)
        self.legend.clear()
        self.curves.clear()
        self.base_lines.clear()
        self.plot.hide()
        self.matrix_box.hide()
        self.empty.show()

    def load_history(self, events: Iterable[Event]) -> None:
        self.clear()
        self.append_events(events)

    def append_events(self, batch: Iterable[Event]) -> None:
        changed = False
        for ev in batch:
            if not isinstance(ev, Eval):
                continue
            changed = True
            for key in METRICS:
                value = getattr(ev, key, None)
                if value is None:
                    continue
                if ev.base:
                    self.base[key] = float(value)
                else:
                    xs, ys = self.points.setdefault(key, ([], []))
                    xs.append(float(ev.step))
                    ys.append(float(value))
            if ev.base:
                self.base_event = ev
            else:
                self.latest = ev
        if changed:
            self._draw()

    def _draw(self) -> None:
        keys = [k for k in METRICS if k in self.points or k in self.base]
        if not keys:
            return
        self.empty.hide()
        self.plot.show()
        for key in keys:
            label, colour = METRICS[key]
            if key in self.points:
                if key not in self.curves:
                    self.curves[key] = self.plot.plot(
                        [], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                        symbolBrush=colour, name=f"{label} (adapted)")
                self.curves[key].setData(*self.points[key])
            if key in self.base:
                line = self.base_lines.get(key)
                if line is None:
                    line = pg.InfiniteLine(angle=0, pen=pg.mkPen(colour, width=1.5,
                                                                 style=Qt.PenStyle.DashLine),
                                           label=f"base {label}", labelOpts={
                                               "position": 0.05, "color": colour})
                    self.plot.addItem(line)  # labelled on the line: "base accuracy"
                    self.base_lines[key] = line
                line.setValue(self.base[key])
        self._draw_matrix()

    def confusion_shown(self) -> Eval | None:
        """The eval whose confusion matrix is drawn (None: none to draw)."""
        ev = self.base_event if self.which.currentIndex() == 1 else self.latest
        if ev is None:
            ev = self.latest or self.base_event
        return ev if ev is not None and ev.confusion else None

    def _draw_matrix(self) -> None:
        ev = self.confusion_shown()
        if ev is None:
            self.matrix_box.hide()
            return
        self.matrix_box.show()
        matrix = np.asarray(ev.confusion, dtype=float)
        n = matrix.shape[0]
        rows = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
        self.image.setImage(share.T, levels=(0.0, 1.0))  # ImageItem is column-major
        for item in self.cell_texts:
            self.matrix_plot.removeItem(item)
        self.cell_texts = []
        for i in range(n):
            for j in range(n):
                text = pg.TextItem(f"{int(matrix[i, j])}", anchor=(0.5, 0.5),
                                   color="w" if share[i, j] < 0.6 else "k")
                text.setPos(j + 0.5, i + 0.5)
                self.matrix_plot.addItem(text)
                self.cell_texts.append(text)
        names = ev.labels or [str(i) for i in range(n)]
        ticks = [[(k + 0.5, name) for k, name in enumerate(names)]]
        self.matrix_plot.getAxis("left").setTicks(ticks)
        self.matrix_plot.getAxis("bottom").setTicks(ticks)
        who = "base model (adapters disabled)" if ev.base else f"adapted, step {ev.step}"
        acc = f", accuracy {ev.accuracy:.3f}" if ev.accuracy is not None else ""
        self.matrix_title.setText(f"{who}{acc}; rows: true class, columns: predicted")


class SamplesView(QTreeWidget):
    """The adapter's continuations of `training.sample_prompts`, readable by step."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["step", "prompt", "continuation"])
        self.setRootIsDecorated(False)
        self.setWordWrap(True)
        self.setAlternatingRowColors(True)
        self.setUniformRowHeights(False)
        self.setColumnWidth(0, 60)
        self.setColumnWidth(1, 260)

    def load_history(self, events: Iterable[Event]) -> None:
        self.clear()
        self.append_events(events)

    def append_events(self, batch: Iterable[Any]) -> None:
        bottom = self.verticalScrollBar().value() >= self.verticalScrollBar().maximum() - 2
        added = False
        for ev in batch:
            if isinstance(ev, Sample):
                item = QTreeWidgetItem([str(ev.step), ev.prompt, ev.text])
                item.setToolTip(2, ev.text)
                item.setTextAlignment(0, Qt.AlignmentFlag.AlignRight)
                self.addTopLevelItem(item)
                added = True
        if added and bottom:
            self.scrollToBottom()

    def rows(self) -> list[tuple[int, str, str]]:
        return [(int(self.topLevelItem(i).text(0)), self.topLevelItem(i).text(1),
                 self.topLevelItem(i).text(2)) for i in range(self.topLevelItemCount())]


class MonitorDetails(QTabWidget):
    """Log, evaluation and samples as tabs under the loss plots."""

    def __init__(self, log_view: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.eval_view = EvalView()
        self.samples_view = SamplesView()
        self.addTab(log_view, "Log")
        self.addTab(self.eval_view, "Evaluation")
        self.addTab(self.samples_view, "Samples")

    def append_events(self, batch: Iterable[Event]) -> None:
        batch = list(batch)
        self.eval_view.append_events(batch)
        self.samples_view.append_events(batch)

    def clear(self) -> None:
        self.eval_view.clear()
        self.samples_view.clear()

    def load_history(self, events: Iterable[Event]) -> None:
        events = list(events)
        self.eval_view.load_history(events)
        self.samples_view.load_history(events)
