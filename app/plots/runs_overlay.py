"""Several runs' loss and eval curves overlaid on one step axis, each run in its own colour and
named in the legend (the runs library).

The curves are static (a finished history, or a live run's history when it was selected), so
pyqtgraph's own peak downsampling and clip-to-view do the work: a 100,000-step curve draws
about two points per pixel column. The train loss is drawn raw and faint, with its smoothed
curve (the Monitor's EMA, bias-corrected) on top, since raw losses of several runs cross each
other on every step; the eval loss (one point per evaluation) has its own plot below, with the
same step axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from graftlab.app.plots.metric_plots import EMA_WEIGHT
from PySide6.QtCore import QEvent, Slot
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

# Tableau 10: distinct on light and dark backgrounds; runs beyond ten get pyqtgraph's hues.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
RAW_ALPHA = 60  # the raw loss under its smoothed curve


def run_colour(i: int) -> QColor:
    return QColor(PALETTE[i]) if i < len(PALETTE) else pg.intColor(i, hues=17)


@dataclass
class OverlayRun:
    """One run's curves: train loss by step, and eval loss by step."""

    name: str
    colour: QColor
    steps: np.ndarray
    loss: np.ndarray
    eval_steps: np.ndarray
    eval_loss: np.ndarray


def smoothed(values: np.ndarray, weight: float = EMA_WEIGHT) -> np.ndarray:
    """TensorBoard-style EMA, bias-corrected; NaN/inf are skipped (drawn raw, not averaged)."""
    out = np.empty(len(values))
    raw, n = 0.0, 0
    for i, v in enumerate(values.tolist()):
        if math.isfinite(v):
            raw = weight * raw + (1 - weight) * v
            n += 1
        out[i] = raw / (1 - weight**n) if n else math.nan
    return out


def _new_plot(bottom: str, left: str) -> pg.PlotWidget:
    widget = pg.PlotWidget()
    item = widget.getPlotItem()
    item.setDownsampling(auto=True, mode="peak")  # before any curve: each copies the settings
    item.setClipToView(True)
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setLabel("bottom", bottom)
    item.setLabel("left", left)
    item.getAxis("left").setWidth(56)  # same width in both plots: the linked x axes line up
    widget.setMinimumSize(200, 110)
    return widget


class RunsOverlay(QWidget):
    """Loss (top) and eval loss (bottom) of the runs given to `show_runs`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_plot = _new_plot("step", "train loss")
        self.eval_plot = _new_plot("step", "eval loss")
        self.eval_plot.getPlotItem().setXLink(self.loss_plot.getPlotItem())
        self.legend = self.loss_plot.getPlotItem().addLegend(offset=(-6, 6),
                                                             labelTextSize="8pt")
        self.smooth_box = QCheckBox("Smooth the train loss")
        self.smooth_box.setChecked(True)
        self.smooth_box.setToolTip(f"Exponential moving average (weight {EMA_WEIGHT}), drawn "
                                   "over the raw loss")
        self.smooth_box.toggled.connect(self._on_smooth_toggled)
        self.hint = QLabel("Select runs in the table to overlay their curves.")
        self.hint.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(self.hint, 1)
        top.addWidget(self.smooth_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.loss_plot, 3)
        layout.addWidget(self.eval_plot, 2)
        self.runs: list[OverlayRun] = []
        self._smooth_cache: dict[int, np.ndarray] = {}
        self._apply_palette()

    # ---- public -------------------------------------------------------------------------------
    def show_runs(self, runs: Sequence[OverlayRun]) -> None:
        """Draw exactly `runs` (replacing what was shown); x and y ranges fit them."""
        self.runs = list(runs)
        self._smooth_cache = {id(r.loss): smoothed(r.loss) for r in self.runs}
        self._redraw()

    def loss_names(self) -> list[str]:
        """The runs named in the legend, in order (one per run with a loss curve)."""
        return [label.text for _sample, label in self.legend.items]

    def eval_names(self) -> list[str]:
        return [c.name() for c in self.eval_plot.getPlotItem().listDataItems()]

    # ---- drawing ------------------------------------------------------------------------------
    def _redraw(self) -> None:
        loss_item, eval_item = self.loss_plot.getPlotItem(), self.eval_plot.getPlotItem()
        loss_item.clear()  # also empties the legend
        eval_item.clear()
        smooth = self.smooth_box.isChecked()
        for run in self.runs:
            if len(run.steps):
                if smooth:
                    faint = QColor(run.colour)
                    faint.setAlpha(RAW_ALPHA)
                    loss_item.addItem(pg.PlotDataItem(run.steps, run.loss, pen=pg.mkPen(faint)))
                    loss_item.addItem(pg.PlotDataItem(
                        run.steps, self._smooth_cache[id(run.loss)], name=run.name,
                        pen=pg.mkPen(run.colour, width=2)))
                else:
                    loss_item.addItem(pg.PlotDataItem(run.steps, run.loss, name=run.name,
                                                      pen=pg.mkPen(run.colour, width=1)))
            if len(run.eval_steps):
                eval_item.addItem(pg.PlotDataItem(
                    run.eval_steps, run.eval_loss, name=run.name,
                    pen=pg.mkPen(run.colour, width=2), symbol="o", symbolSize=5,
                    symbolPen=pg.mkPen(run.colour), symbolBrush=run.colour))
        with_loss = sum(1 for r in self.runs if len(r.steps))
        with_eval = sum(1 for r in self.runs if len(r.eval_steps))
        if not self.runs:
            self.hint.setText("Select runs in the table to overlay their curves.")
        else:
            self.hint.setText(f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''}: "
                              f"{with_loss} with a loss curve, {with_eval} with eval points")
        for item in (loss_item, eval_item):
            item.enableAutoRange()

    @Slot(bool)
    def _on_smooth_toggled(self, _on: bool) -> None:
        self._redraw()

    def _apply_palette(self) -> None:
        pal = self.palette()
        bg, fg = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        axis_pen = pg.mkPen(QColor(fg.red(), fg.green(), fg.blue(), 160))
        for widget in (self.loss_plot, self.eval_plot):
            widget.setBackground(bg)
            for side in ("left", "bottom"):
                axis = widget.getPlotItem().getAxis(side)
                axis.setPen(axis_pen)
                axis.setTextPen(fg)
        self.legend.setLabelTextColor(fg)
        self.legend.setBrush(QColor(bg.red(), bg.green(), bg.blue(), 200))

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()  # light/dark switch follows the system
        super().changeEvent(event)

