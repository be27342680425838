"""Live training plots: a grid of pyqtgraph plots that share a linked step axis (STYLE.md §4).

One PlotDataItem per metric is updated in place, once per event batch, from growable numpy
arrays (capacity doubles). Auto-downsampling ("peak") and clip-to-view are set on each plot before
its curves are added, so a million-point curve still repaints in a few milliseconds. Metrics of
different scale get their own plot: a 1e-4 learning rate next to a loss of 2.0 would be a flat line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QTimer, Slot
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGridLayout, QWidget

from core.events import Eval, Event, Started, Step

EMA_WEIGHT = 0.9  # smoothing of the loss curve (TensorBoard-style, bias-corrected)
# Redraw at most this often. pyqtgraph paints in Python, so every repaint competes with the
# training thread for the GIL; 4 Hz looks live and keeps the event loop responsive.
REDRAW_INTERVAL_MS = 250


class _Series:
    """x/y float64 arrays that grow by doubling; `view()` is the filled part."""

    def __init__(self, capacity: int = 1024) -> None:
        self.x = np.empty(capacity)
        self.y = np.empty(capacity)
        self.n = 0

    def extend(self, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray) -> None:
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        need = self.n + len(xs)
        if need > len(self.x):
            capacity = max(len(self.x), 1)
            while capacity < need:
                capacity *= 2
            for name in ("x", "y"):
                grown = np.empty(capacity)
                grown[: self.n] = getattr(self, name)[: self.n]
                setattr(self, name, grown)
        self.x[self.n : need] = xs
        self.y[self.n : need] = ys
        self.n = need

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[: self.n], self.y[: self.n]

    def clear(self) -> None:
        self.n = 0


# key -> (plot, legend name, colour, width, scatter). Order is legend order.
_CURVES: dict[str, tuple[str, str, str, int, bool]] = {
    "loss": ("loss", "train loss", "#7aa6d6", 1, False),
    "loss_ema": ("loss", "smoothed", "#1f5fa8", 2, False),
    "eval_loss": ("loss", "eval loss", "#e8711a", 1, True),
    "learning_rate": ("lr", "learning rate", "#2e9e4f", 2, False),
    "grad_norm": ("grad", "grad norm", "#8e44ad", 1, False),
    "tokens_per_s": ("speed", "tokens/s", "#16a0a0", 1, False),
    "memory_mb": ("memory", "process RSS", "#a0522d", 2, False),
    "gpu_memory_mb": ("memory", "GPU allocated", "#d62728", 2, False),
    "trainable": ("params", "trainable", "#7f7f7f", 2, False),
}
# plot key -> (title, left-axis label, row, column, legend offset or None)
_PLOTS: dict[str, tuple[str, str, int, int, tuple[int, int] | None]] = {
    "loss": ("Loss", "nats / token", 0, 0, (-4, 4)),  # top right: a loss falls
    "lr": ("Learning rate", "", 0, 1, None),
    "grad": ("Gradient norm (before clipping)", "L2 norm", 1, 0, None),
    "speed": ("Throughput", "tokens / s", 1, 1, None),
    "memory": ("Memory", "MB", 2, 0, (-4, -4)),  # bottom right: memory grows or stays flat
    "params": ("Trainable parameters", "", 2, 1, None),
}


class _PlainAxis(pg.AxisItem):
    """Readable ticks for any scale: 0.0002 for a learning rate, 82 K for parameter counts."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        top = max((abs(v) for v in values), default=0.0)
        if top >= 1e4:
            return [human_count(v, spacing) for v in values]
        if 0 < top < 1e-3:
            return [f"{v:.3g}" for v in values]
        return super().tickStrings(values, scale, spacing)


def human_count(n: float, spacing: float = 0.0) -> str:
    """12.3 K, 4.5 M; with a tick `spacing`, just enough digits to tell ticks apart."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale or (spacing and spacing >= scale):
            if spacing:
                digits = max(0, -math.floor(math.log10(spacing / scale) + 1e-9))
                return f"{n / scale:.{digits}f} {unit}"
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


class MetricPlots(QWidget):
    """Loss (raw, smoothed, eval), learning rate, grad norm, tokens/s, memory, trainable params."""

    def __init__(self, parent: QWidget | None = None,
                 redraw_interval_ms: int = REDRAW_INTERVAL_MS) -> None:
        super().__init__(parent)
        self._dirty: set[str] = set()
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(redraw_interval_ms)
        self._redraw.timeout.connect(self.flush)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.plots: dict[str, pg.PlotWidget] = {}
        for key, (_title, label, row, col, legend) in _PLOTS.items():
            widget = pg.PlotWidget(self, axisItems={"left": _PlainAxis("left")})
            item = widget.getPlotItem()
            item.setDownsampling(auto=True, mode="peak")  # before curves: addItem copies them
            item.setClipToView(True)
            item.setMenuEnabled(True)
            item.showGrid(x=True, y=True, alpha=0.15)
            item.setLabel("left", label)
            item.getAxis("left").setWidth(64)  # same width everywhere: linked x axes line up
            item.setLabel("bottom", "step")
            if legend is not None:
                item.addLegend(offset=legend, labelTextSize="8pt")
            widget.setMinimumSize(160, 110)
            layout.addWidget(widget, row, col)
            self.plots[key] = widget
        first = self.plots["loss"].getPlotItem()
        for widget in self.plots.values():
            if widget.getPlotItem() is not first:
                widget.getPlotItem().setXLink(first)
        self._series: dict[str, _Series] = {k: _Series() for k in _CURVES}
        self.curves: dict[str, pg.PlotDataItem] = {k: self._new_curve(k) for k in _CURVES}
        self._ema_raw = 0.0
        self._ema_n = 0
        self._started: Started | None = None
        self._apply_palette()

    # ---- public -------------------------------------------------------------------------------
    @Slot(object)
    def append_events(self, batch: Iterable[Event]) -> None:
        """Add a batch of events; curves redraw at most every `redraw_interval_ms`."""
        cols: dict[str, tuple[list[float], list[float]]] = {}

        def put(key: str, x: float, y: float) -> None:
            xs, ys = cols.setdefault(key, ([], []))
            xs.append(x)
            ys.append(y)

        for ev in batch:
            if isinstance(ev, Step):
                x = float(ev.step)
                put("loss", x, ev.loss)
                put("loss_ema", x, self._smooth(ev.loss))
                put("learning_rate", x, ev.learning_rate)
                put("grad_norm", x, math.nan if ev.grad_norm is None else ev.grad_norm)
                put("tokens_per_s", x, ev.tokens_per_s)
                put("memory_mb", x, ev.memory_mb)
                if ev.gpu_memory_mb is not None:
                    put("gpu_memory_mb", x, ev.gpu_memory_mb)
            elif isinstance(ev, Eval):
                put("eval_loss", float(ev.step), ev.eval_loss)
            elif isinstance(ev, Started):
                self._on_started(ev)
        if self._started is not None and "loss" in cols:
            steps = cols["loss"][0]
            first = min(self._started.start_step, steps[0])
            self._series["trainable"].clear()
            cols["trainable"] = ([first, max(steps[-1], first + 1)],
                                 [self._started.trainable_params] * 2)
        self.append_columns({k: (np.asarray(v[0]), np.asarray(v[1])) for k, v in cols.items()})

    def append_columns(self, columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Bulk append arrays per curve key (see `_CURVES`); the redraw follows within
        `redraw_interval_ms` (at once when it is 0)."""
        for key, (xs, ys) in columns.items():
            self._series[key].extend(xs, ys)
        self._dirty.update(columns)
        if self._redraw.interval() <= 0:
            self.flush()
        elif self._dirty and not self._redraw.isActive():
            self._redraw.start()

    @Slot()
    def flush(self) -> None:
        """Push pending points to the curves now: one setData per touched curve."""
        self._redraw.stop()
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            x, y = self._series[key].view()
            curve = self.curves[key]
            curve.setData(x, y)
            if curve.getViewBox() is None and len(x):
                self.plots[_CURVES[key][0]].getPlotItem().addItem(curve)

    def load_history(self, events: Iterable[Event]) -> None:
        """Show a finished run's history (e.g. `core.events.read_metrics(metrics.jsonl)`)."""
        self.clear()
        self.append_events(list(events))
        self.flush()

    def clear(self) -> None:
        self._redraw.stop()
        self._dirty.clear()
        for key, series in self._series.items():
            series.clear()
            curve = self.curves[key]
            if curve.getViewBox() is not None:  # re-adding a removed item confuses pyqtgraph
                self.plots[_CURVES[key][0]].getPlotItem().removeItem(curve)
                self.curves[key] = self._new_curve(key)
        self._ema_raw, self._ema_n, self._started = 0.0, 0, None
        item = self.plots["params"].getPlotItem()
        item.setTitle(_PLOTS["params"][0], color=self._text_color, size="9pt")
        item.enableAutoRange(axis="y")

    def point_count(self, key: str) -> int:
        return self._series[key].n

    # ---- internals ----------------------------------------------------------------------------
    @staticmethod
    def _new_curve(key: str) -> pg.PlotDataItem:
        """A curve joins its plot with its first point, so empty curves get no legend entry."""
        _plot, name, color, width, scatter = _CURVES[key]
        if scatter:
            return pg.PlotDataItem(name=name, pen=None, symbol="o", symbolSize=7,
                                   symbolBrush=color, symbolPen=None)
        return pg.PlotDataItem(name=name, pen=pg.mkPen(color, width=width))

    def _smooth(self, value: float) -> float:
        if math.isfinite(value):  # a NaN/inf loss is drawn raw but does not poison the average
            self._ema_raw = EMA_WEIGHT * self._ema_raw + (1 - EMA_WEIGHT) * value
            self._ema_n += 1
        if self._ema_n == 0:
            return math.nan
        return self._ema_raw / (1 - EMA_WEIGHT**self._ema_n)

    def _on_started(self, ev: Started) -> None:
        self._started = ev
        share = 100.0 * ev.trainable_params / ev.base_params if ev.base_params else 0.0
        self.plots["params"].getPlotItem().setTitle(
            f"Trainable parameters: {human_count(ev.trainable_params)} of "
            f"{human_count(ev.base_params)} ({share:.2g} %)", color=self._text_color, size="9pt")
        item = self.plots["params"].getPlotItem()  # a constant: auto-range would zoom on nothing
        item.setYRange(0, max(ev.trainable_params, 1) * 1.15, padding=0)

    def _apply_palette(self) -> None:
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Base)
        fg = pal.color(QPalette.ColorRole.Text)
        self._text_color = fg.name()
        axis_pen = pg.mkPen(QColor(fg.red(), fg.green(), fg.blue(), 160))
        for key, widget in self.plots.items():
            widget.setBackground(bg)
            item = widget.getPlotItem()
            for side in ("left", "bottom"):
                axis = item.getAxis(side)
                axis.setPen(axis_pen)
                axis.setTextPen(fg)
            if key != "params" or self._started is None:
                item.setTitle(_PLOTS[key][0], color=self._text_color, size="9pt")
            if item.legend is not None:
                item.legend.setLabelTextColor(fg)
                item.legend.setBrush(QColor(bg.red(), bg.green(), bg.blue(), 200))
        if self._started is not None:
            self._on_started(self._started)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()  # light/dark switch follows the system
        super().changeEvent(event)

