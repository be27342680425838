"""Live training plots: a grid of pyqtgraph plots that share a linked step axis.

One PlotDataItem per metric is updated in place, at most once per redraw interval, from a
`PeakSeries` (growable numpy arrays plus a min/max pyramid, see `decimate.py`). A curve is handed
only what its plot can show: the points in the visible step range when there are at most two per
pixel column, else a (min, max) pair per pixel column, so spikes stay visible and a million-point
curve costs the same to append and repaint as a thousand-point one. pyqtgraph's own downsampling
and clip-to-view stay off (they would scan the whole array on every update); zooming or panning
re-decimates the visible range. Metrics of different scale get their own plot: a 1e-4 learning rate
next to a loss of 2.0 would be a flat line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg
from graftlab.app.plots.decimate import PeakSeries
from graftlab.app.plots.sticky_range import StickyX, StickyY
from graftlab.core.train.events import Eval, Event, Started, Step
from PySide6.QtCore import QEvent, QObject, QRect, Qt, QTimer, Slot
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPalette
from PySide6.QtWidgets import QGraphicsItem, QGridLayout, QWidget

EMA_WEIGHT = 0.9  # smoothing of the loss curve (TensorBoard-style, bias-corrected)
# Redraw at most this often; 4 Hz looks live and leaves the event loop mostly idle.
REDRAW_INTERVAL_MS = 250
# A redraw updates one plot at a time, this far apart, so each plot is painted in its own pass
# of the event loop (Qt coalesces updates into one paint within ~5 ms): six plots whose ranges
# change together then stall the loop six times ~10 ms instead of once ~60 ms.
STAGGER_MS = 12


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
# plot key -> (titles, longest first, left-axis label, row, column, legend offset or None). A plot
# shows the longest title that fits its width and elides the shortest, so a long title never
# widens its plot beyond the window (the layout would push the axis off the right edge).
_PLOTS: dict[str, tuple[tuple[str, ...], str, int, int, tuple[int, int] | None]] = {
    "loss": (("Loss",), "nats / token", 0, 0, (-4, 4)),  # top right: a loss falls
    "lr": (("Learning rate",), "", 0, 1, None),
    "grad": (("Gradient norm (before clipping)", "Gradient norm"), "L2 norm", 1, 0, None),
    "speed": (("Throughput",), "tokens / s", 1, 1, None),
    "memory": (("Memory",), "MB", 2, 0, (-4, -4)),  # bottom right: memory grows or stays flat
    "params": (("Trainable parameters", "Trainable"), "", 2, 1, None),
}
TITLE_SIZE_PT = 9
EDGE_MARGIN = 0.03  # room beyond a plot's data range on each side, as a fraction of it


class _Axis(pg.AxisItem):
    """An axis whose grid lines are filled 1-px rectangles instead of stroked lines.

    The grid is drawn above the curves, so it is semi-transparent, and Qt's raster engine strokes
    a semi-transparent cosmetic line far slower than it fills the same pixels (offscreen, 55
    horizontal lines 800 px long: ~4 ms stroked, ~0.2 ms filled; vertical ones gain less). In
    bench_plot_repaint that is ~1.2 ms off one 800x400 plot and ~13 ms off the six-plot grid.
    The pixels are the same (the line's row or column, colour and alpha) but for, at most, the
    end pixel of a line. Other tick specs go to pyqtgraph's own drawPicture unchanged.
    """

    def drawPicture(self, p: QPainter, axisSpec: tuple, tickSpecs: list,  # noqa: N802, N803
                    textSpecs: list) -> None:  # noqa: N803
        stroked = []
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for pen, p1, p2 in tickSpecs:
            if pen.isCosmetic() and pen.widthF() <= 1 and pen.style() == Qt.PenStyle.SolidLine:
                # An aliased 1-px line from a to b covers pixels floor(a)..floor(b) of row
                # floor(y) (or that column): fill exactly those.
                if p1.y() == p2.y():
                    left, right = sorted((math.floor(p1.x()), math.floor(p2.x())))
                    p.fillRect(QRect(left, math.floor(p1.y()), right - left + 1, 1), pen.color())
                    continue
                if p1.x() == p2.x():
                    top, bottom = sorted((math.floor(p1.y()), math.floor(p2.y())))
                    p.fillRect(QRect(math.floor(p1.x()), top, 1, bottom - top + 1), pen.color())
                    continue
            stroked.append((pen, p1, p2))
        super().drawPicture(p, axisSpec, stroked, textSpecs)


class _PlainAxis(_Axis):
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


def with_margin(lo: float, hi: float) -> tuple[float, float]:
    """A range with EDGE_MARGIN room each side (the views' own padding is off: it depends on
    their size), so the end ticks and their labels stay inside the plot."""
    room = (hi - lo) * EDGE_MARGIN
    return lo - room, hi + room


class _Curve(pg.PlotDataItem):
    """A curve that is handed a decimation of its series, and reports bounds that rarely move.

    For auto-ranging, x bounds come from `extent` (every point held, not just the decimation)
    and y bounds from the points drawn; both go through sticky ranges (`sticky_range.py`), so
    the view, and with it the axes' ticks, change a few times per run instead of on every
    batch. `x_limit` is the run's last planned step: the step axis ends there, not beyond.
    """

    extent: tuple[float, float] | None = None
    x_limit: float | None = None
    x_start: float | None = None  # with x_limit: where the run's step axis begins

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._sticky_x, self._sticky_y = StickyX(), StickyY()

    def dataBounds(self, ax: int, frac: float = 1.0,
                   orthoRange: tuple[float, float] | None = None) -> tuple:  # noqa: N803
        if ax == 0 and self.extent is not None and frac == 1.0 and orthoRange is None:
            lo, hi = self.extent
        else:
            lo, hi = super().dataBounds(ax, frac, orthoRange)
        if frac != 1.0 or lo is None or hi is None or not (math.isfinite(lo)
                                                           and math.isfinite(hi)):
            return lo, hi
        if ax == 0:
            if self.x_limit is not None and self.x_start is not None:
                lo = min(lo, self.x_start)  # every curve of the run: the same step axis
            return with_margin(*self._sticky_x.fit(lo, hi, self.x_limit))
        return with_margin(*self._sticky_y.fit(lo, hi))

    def pixelPadding(self) -> float:  # noqa: N802 - pyqtgraph's name
        # Padding in pixels becomes padding in data units that depends on the range: each
        # range change would then cause a second, slightly different one. The sticky bounds
        # already leave room around the data.
        return 0.0


class MetricPlots(QWidget):
    """Loss (raw, smoothed, eval), learning rate, grad norm, tokens/s, memory, trainable params."""

    def __init__(self, parent: QWidget | None = None,
                 redraw_interval_ms: int = REDRAW_INTERVAL_MS) -> None:
        super().__init__(parent)
        self._dirty: set[str] = set()
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(redraw_interval_ms)
        self._redraw.timeout.connect(self._draw_next_plot)
        self._stagger = QTimer(self)
        self._stagger.setSingleShot(True)
        self._stagger.setInterval(STAGGER_MS)
        self._stagger.timeout.connect(self._draw_next_plot)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self._text_color = "#000000"
        self._titles: dict[str, tuple[str, ...]] = {k: v[0] for k, v in _PLOTS.items()}
        self.plots: dict[str, pg.PlotWidget] = {}
        self._plot_of_view: dict[pg.ViewBox, str] = {}
        self._auto_x: dict[pg.ViewBox, bool] = {}  # x autorange as last seen, per view
        for key, (_titles, label, row, col, legend) in _PLOTS.items():
            widget = pg.PlotWidget(self, axisItems={"left": _PlainAxis("left"),
                                                    "bottom": _Axis("bottom")})
            item = widget.getPlotItem()
            # pyqtgraph's downsampling and clip-to-view stay off (the defaults): each would scan
            # the whole array on every update. `_draw` hands curves the visible part, decimated.
            item.setMenuEnabled(True)
            item.showGrid(x=True, y=True, alpha=0.15)
            # No automatic padding: pyqtgraph's depends on the view's size, so a range set
            # while the plots are hidden would change again once they are shown (rebuilding
            # every step axis). The sticky ranges already leave room around the data.
            item.getViewBox().setDefaultPadding(0.0)
            item.setLabel("left", label)
            item.getAxis("left").setWidth(64)  # same width everywhere: linked x axes line up
            for side in ("left", "bottom"):
                # Axes are redrawn from a pixmap unless their ticks change (sticky ranges keep
                # that rare); replaying their QPicture cost ~1 ms per axis per repaint.
                item.getAxis(side).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            item.setLabel("bottom", "step")
            if legend is not None:
                item.addLegend(offset=legend, labelTextSize="8pt")
            widget.setMinimumSize(160, 110)
            widget.installEventFilter(self)  # resize: refit the title
            layout.addWidget(widget, row, col)
            self.plots[key] = widget
            self._plot_of_view[item.getViewBox()] = key
        first = self.plots["loss"].getPlotItem()
        for widget in self.plots.values():
            if widget.getPlotItem() is not first:
                widget.getPlotItem().setXLink(first)
        self._series: dict[str, PeakSeries] = {k: PeakSeries() for k in _CURVES}
        self._drawn: dict[str, tuple] = {}  # curve key -> what its current setData showed
        self.curves: dict[str, _Curve] = {k: self._new_curve(k) for k in _CURVES}
        for view in self._plot_of_view:
            # Zoom, pan, resize, autorange switched on or off: re-decimate what is now visible.
            view.sigXRangeChanged.connect(self._on_view_changed)
            view.sigResized.connect(self._on_view_changed)
            view.sigStateChanged.connect(self._on_view_state_changed)
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
            elif isinstance(ev, Eval) and not ev.base:  # the base's: a line in EvalView
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
        elif self._dirty and not (self._redraw.isActive() or self._stagger.isActive()):
            self._redraw.start()

    @Slot()
    def flush(self) -> None:
        """Push pending points to the curves now: at most one setData per touched curve."""
        self._redraw.stop()
        self._stagger.stop()
        dirty, self._dirty = self._dirty, set()
        for key in _CURVES:  # in legend order: a curve joins its plot (and legend) on first draw
            if key in dirty:
                self._draw(key)

    @Slot()
    def _draw_next_plot(self) -> None:
        """The timed redraw: the pending curves of one plot, then the next plot after
        STAGGER_MS, until none is pending."""
        plot = next((_CURVES[k][0] for k in _CURVES if k in self._dirty), None)
        if plot is None:
            return
        for key in _CURVES:
            if key in self._dirty and _CURVES[key][0] == plot:
                self._dirty.discard(key)
                self._draw(key)
        if self._dirty:
            self._stagger.start()

    def expect_steps(self, first: float, last: float) -> None:
        """Show steps `first`..`last` on the (linked) step axis. Rebuilding the six step axes
        takes ~50 ms, so a window that knows the next run's length sets it while idle, and the
        run's `Started` event then finds the axis already right."""
        if first < last:
            self.plots["loss"].getPlotItem().getViewBox().setRange(
                xRange=with_margin(first, last), padding=0.0, disableAutoRange=False)

    def warm_up(self, interval_ms: int = 20) -> None:
        """Paint each plot once, offscreen, one per `interval_ms` (call while hidden, at the size
        it will be shown). The first paint of a plot lays out and draws its axes (~15 ms each);
        done ahead, the first Start does not pay for it (tests/bench/bench_ui_stall.py)."""
        widgets = list(self.plots.values())

        def next_one() -> None:
            if widgets:
                widgets.pop(0).grab()
                # `self` as context: a window closed meanwhile cancels the rest of the chain
                QTimer.singleShot(interval_ms, self, next_one)

        next_one()

    def load_history(self, events: Iterable[Event]) -> None:
        """Show a finished run's history (e.g. `read_metrics(metrics.jsonl)` from
        graftlab.core.train.events)."""
        self.clear()
        self.append_events(list(events))
        self.flush()

    def clear(self) -> None:
        self._redraw.stop()
        self._stagger.stop()
        self._dirty.clear()
        self._drawn.clear()
        for key, series in self._series.items():
            series.clear()
            curve = self.curves[key]
            if curve.getViewBox() is not None:  # re-adding a removed item confuses pyqtgraph
                self.plots[_CURVES[key][0]].getPlotItem().removeItem(curve)
                self.curves[key] = self._new_curve(key)
        self._ema_raw, self._ema_n, self._started = 0.0, 0, None
        self._titles["params"] = _PLOTS["params"][0]
        self._fit_title("params")
        self.plots["params"].getPlotItem().enableAutoRange(axis="y")

    def point_count(self, key: str) -> int:
        """Points held for curve `key` (not the decimated number drawn)."""
        return self._series[key].n

    def data(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """All x/y points held for curve `key` (read-only views; the curve draws a decimation)."""
        x, y = self._series[key].view()
        x.flags.writeable = y.flags.writeable = False
        return x, y

    # ---- internals ----------------------------------------------------------------------------
    @staticmethod
    def _new_curve(key: str) -> _Curve:
        """A curve joins its plot with its first point, so empty curves get no legend entry."""
        _plot, name, color, width, scatter = _CURVES[key]
        if scatter:
            return _Curve(name=name, pen=None, symbol="o", symbolSize=7,
                          symbolBrush=color, symbolPen=None)
        return _Curve(name=name, pen=pg.mkPen(color, width=width))

    def _draw(self, key: str) -> None:
        """Hand curve `key` what its plot shows: the points of the visible step range, or a
        (min, max) pair per pixel column when there are more than two per column."""
        series = self._series[key]
        if series.n == 0:
            return
        widget = self.plots[_CURVES[key][0]]
        item = widget.getPlotItem()
        view = item.getViewBox()
        master = view.linkedView(0)  # the loss plot, for the others (linked step axis)
        if view.autoRangeEnabled()[0] or (master is not None and master.autoRangeEnabled()[0]):
            x0 = x1 = None  # x follows the data: show all of it
        else:
            x0, x1 = view.viewRange()[0]
        a, b = series.window(x0, x1)
        columns = max(16, round(view.width() * widget.devicePixelRatioF()))
        exact = b - a <= 2 * columns
        state = (series.version, a, b, columns, None if exact else (x0, x1))
        curve = self.curves[key]
        if self._drawn.get(key) == state and curve.getViewBox() is not None:
            return  # e.g. a y-only change, or autorange settling: the curve is up to date
        self._drawn[key] = state
        curve.extent = None if x0 is not None else (series.x_min, series.x_max)
        curve.x_limit, curve.x_start = self._run_steps()
        curve.setData(*series.decimate(a, b, columns, x0, x1))
        if curve.getViewBox() is None:
            item.addItem(curve)

    def _on_view_changed(self, view: pg.ViewBox, *_args: object) -> None:
        key = self._plot_of_view.get(view)
        if key is None:
            return
        for curve_key, (plot, *_rest) in _CURVES.items():
            if plot == key and self.curves[curve_key].getViewBox() is not None:
                self._draw(curve_key)

    def _on_view_state_changed(self, view: pg.ViewBox) -> None:
        """Fires on every range change too; only x autorange switched on or off matters here:
        switched on, curves must be handed all their points to range on; the linked plots
        follow the loss plot's setting."""
        auto = view.autoRangeEnabled()[0]
        if self._auto_x.get(view) != auto:
            self._auto_x[view] = auto
            for other in self._plot_of_view:
                self._on_view_changed(other)

    def _smooth(self, value: float) -> float:
        if math.isfinite(value):  # a NaN/inf loss is drawn raw but does not poison the average
            self._ema_raw = EMA_WEIGHT * self._ema_raw + (1 - EMA_WEIGHT) * value
            self._ema_n += 1
        if self._ema_n == 0:
            return math.nan
        return self._ema_raw / (1 - EMA_WEIGHT**self._ema_n)

    def _run_steps(self) -> tuple[float | None, float | None]:
        """(last planned step, first step shown) of the live run, or (None, None)."""
        if self._started is None:
            return None, None
        start = float(self._started.start_step)
        if self._series["loss"].n:  # a resumed run shows its history from its first step
            start = min(start, self._series["loss"].x_min)
        return float(self._started.total_steps), start

    def _on_started(self, ev: Started) -> None:
        self._started = ev
        # The step axis spans the run from now on (see StickyX): set it before the first step
        # arrives, so the first redraw does not also rebuild the ticks of every plot.
        limit, start = self._run_steps()
        if limit is not None and start is not None:
            self.expect_steps(start, limit)
        share = f" ({100.0 * ev.trainable_params / ev.base_params:.2g} %)" if ev.base_params else ""
        trainable, base = human_count(ev.trainable_params), human_count(ev.base_params)
        self._titles["params"] = (f"Trainable parameters: {trainable} of {base}{share}",
                                  f"Trainable: {trainable} of {base}{share}",
                                  f"Trainable: {trainable}{share}",
                                  f"{trainable}{share}")
        self._fit_title("params")
        item = self.plots["params"].getPlotItem()  # a constant: auto-range would zoom on nothing
        item.setYRange(0, max(ev.trainable_params, 1) * 1.15, padding=0)

    def _fit_title(self, key: str) -> None:
        """Show the longest of the plot's titles that fits its width, else elide the shortest;
        the full title goes to the tooltip when it does not show."""
        widget = self.plots[key]
        item = widget.getPlotItem()
        label = item.titleLabel
        font = QFont(label.item.font())
        font.setPointSizeF(TITLE_SIZE_PT)
        metrics = QFontMetricsF(font)
        # The title sits above the view box; the text item adds a small document margin.
        margin = 2 * label.item.document().documentMargin() + 12
        room = widget.width() - item.getAxis("left").width() - margin
        titles = self._titles[key]
        text = next((t for t in titles if metrics.horizontalAdvance(t) <= room), None)
        if text is None:
            text = metrics.elidedText(titles[-1], Qt.TextElideMode.ElideRight, max(room, 0))
        item.setTitle(html.escape(text), color=self._text_color, size=f"{TITLE_SIZE_PT}pt")
        label.setToolTip("" if text == titles[0] else titles[0])

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
            self._fit_title(key)
            if item.legend is not None:
                item.legend.setLabelTextColor(fg)
                item.legend.setBrush(QColor(bg.red(), bg.green(), bg.blue(), 200))

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()  # light/dark switch follows the system
        super().changeEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            key = next((k for k, w in self.plots.items() if w is watched), None)
            if key is not None:
                self._fit_title(key)
        return super().eventFilter(watched, event)
