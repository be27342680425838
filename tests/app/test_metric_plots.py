"""MetricPlots with long runs: curves get a per-pixel min/max decimation of the visible step
range, zoom and pan re-decimate, point counts stay exact; titles fit narrow windows.

Speed is measured by tests/bench/bench_plot_repaint.py, not here.
"""

from __future__ import annotations

import numpy as np
import pytest
from graftlab.app.plots.metric_plots import MetricPlots
from graftlab.core.train.events import Eval, Started, Step
from PySide6.QtGui import QColor, QPalette

N = 1_000_000


def step(i: int, loss: float = 1.0) -> Step:
    return Step(i, loss, 1e-4, 0.5, i / 10, 1000.0, i * 64, i * 0.1, 10.0, 500.0)


@pytest.fixture
def plots(qtbot):
    w = MetricPlots(redraw_interval_ms=0)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    return w


@pytest.fixture
def filled(plots):
    """A million loss and grad-norm points with one-point spikes; painted once (autorange)."""
    rng = np.random.default_rng(0)
    x = np.arange(1, N + 1, dtype=float)
    y = 2 + np.sin(x / 5000) + rng.normal(0, 0.05, N)
    spikes = rng.choice(N, 8, replace=False)
    y[spikes[:4]] = 9.0
    y[spikes[4:]] = -5.0
    plots.append_columns({"loss": (x, y), "grad_norm": (x, y * 2)})
    plots.grab()
    return x, y, spikes


def drawn(plots: MetricPlots, key: str) -> tuple[np.ndarray, np.ndarray]:
    return plots.curves[key].getData()


def columns(plots: MetricPlots, plot: str = "loss") -> int:
    widget = plots.plots[plot]
    return round(widget.getPlotItem().getViewBox().width() * widget.devicePixelRatioF())


def test_whole_run_is_drawn_as_a_min_max_envelope(plots, filled):
    x, y, spikes = filled
    dx, dy = drawn(plots, "loss")
    assert plots.point_count("loss") == N
    assert len(dx) <= 2 * columns(plots) + 2  # about two points per pixel column
    assert dx[0] == 1 and dx[-1] == N  # first and newest point exactly
    assert dy.max() == 9.0 and dy.min() == -5.0
    per_pixel = N / columns(plots)
    for i in spikes:  # every one-point spike is drawn, in its pixel column (or the next)
        assert np.min(np.abs(dx[dy == y[i]] // per_pixel - x[i] // per_pixel)) <= 1
    y_lo, y_hi = plots.plots["loss"].getPlotItem().getViewBox().viewRange()[1]
    assert y_lo <= -5.0 and y_hi >= 9.0  # y autorange sees the spikes


def test_zooming_to_100_points_shows_exactly_those_points(plots, filled):
    x, y, _spikes = filled
    view = plots.plots["loss"].getPlotItem().getViewBox()
    view.setXRange(500_000, 500_099, padding=0)
    dx, dy = drawn(plots, "loss")
    np.testing.assert_array_equal(dx, np.arange(499_999, 500_101))  # + one neighbour each side
    np.testing.assert_array_equal(dy, y[499_998:500_100])
    gx, gy = drawn(plots, "grad_norm")  # the linked step axis re-decimates the other plots too
    np.testing.assert_array_equal(gx, dx)
    np.testing.assert_array_equal(gy, 2 * dy)
    view.setXRange(10, 109, padding=0)  # pan
    np.testing.assert_array_equal(drawn(plots, "loss")[0], np.arange(9, 111))
    view.enableAutoRange(axis="x")  # back to the whole run
    plots.grab()
    dx, dy = drawn(plots, "loss")
    assert dx[0] == 1 and dx[-1] == N and len(dx) <= 2 * columns(plots) + 2
    assert dy.max() == 9.0


def test_a_wide_zoom_is_decimated_within_the_view(plots, filled):
    x, y, _spikes = filled
    view = plots.plots["loss"].getPlotItem().getViewBox()
    view.setXRange(100_000, 600_000, padding=0)
    dx, dy = drawn(plots, "loss")
    assert len(dx) <= 2 * columns(plots) + 4
    assert dx[0] == 99_999 and dx[-1] == 600_001  # neighbours just outside the view
    inside = y[99_999:600_000]
    assert dy[1:-1].max() == inside.max() and dy[1:-1].min() == inside.min()


def test_point_count_is_exact_after_many_appends(plots, filled):
    x, y, _spikes = filled
    expected_x = [x]
    for b in range(300):
        steps = range(N + 1 + 7 * b, N + 8 + 7 * b)
        plots.append_events([step(i, 0.5) for i in steps] + [Eval(steps[-1], 0.4)])
        expected_x.append(np.array(steps, dtype=float))
    plots.grab()
    assert plots.point_count("loss") == N + 2100
    assert plots.point_count("eval_loss") == 300
    assert plots.point_count("learning_rate") == 2100  # only the events carried it
    np.testing.assert_array_equal(plots.data("loss")[0], np.concatenate(expected_x))
    dx, _dy = drawn(plots, "loss")
    assert dx[-1] == N + 2100 and len(dx) <= 2 * columns(plots) + 2


def test_newest_point_stays_in_view_while_x_follows_the_run(plots, filled):
    view = plots.plots["loss"].getPlotItem().getViewBox()
    plots.append_events([step(N + i) for i in range(1, 11)])  # the smoothed curve joins
    plots.grab()
    before = view.viewRange()[0]
    assert before[1] >= N + 10
    plots.append_events([step(N + i) for i in range(11, 21)])
    plots.grab()
    # Ten steps are a hundredth of a pixel here: the view (and its five linked views) stay put.
    assert view.viewRange()[0] == before and before[1] >= N + 20
    plots.append_events([step(N + i) for i in range(21, 20_001)])
    plots.grab()
    assert view.viewRange()[0][1] >= N + 20_000
    assert drawn(plots, "loss")[0][-1] == N + 20_000


def test_appends_while_zoomed_in_leave_the_view_alone(plots, filled):
    view = plots.plots["loss"].getPlotItem().getViewBox()
    view.setXRange(1000, 1099, padding=0)
    plots.append_events([step(N + i) for i in range(1, 11)])
    plots.grab()
    assert view.viewRange()[0] == pytest.approx([1000, 1099])
    np.testing.assert_array_equal(drawn(plots, "loss")[0], np.arange(999, 1101))
    assert plots.point_count("loss") == N + 10


def test_step_and_eval_events_reach_every_curve(plots):
    plots.append_events([Started("run", 10, 8192, 702_848, "cpu", "fp32", 256)]
                        + [step(i, loss=4.0 / i) for i in range(1, 2001)]
                        + [Eval(1000, 0.7), Eval(2000, 0.5)])
    plots.grab()
    for key in ("loss", "loss_ema", "learning_rate", "grad_norm", "tokens_per_s", "memory_mb"):
        assert plots.point_count(key) == 2000, key
        dx, _dy = drawn(plots, key)
        assert dx[0] == 1 and dx[-1] == 2000, key
    ex, ey = drawn(plots, "eval_loss")
    assert list(ex) == [1000, 2000] and list(ey) == [0.7, 0.5]
    _x, ema = plots.data("loss_ema")
    assert ema[0] == pytest.approx(4.0) and ema[-1] < ema[0]
    assert list(drawn(plots, "trainable")[1]) == [8192, 8192]


def test_clear_and_load_history_after_a_long_run(plots, filled):
    plots.load_history([step(1, 3.0), step(2, 2.0), Eval(2, 1.5), step(3, 1.0)])
    assert plots.point_count("loss") == 3
    dx, dy = drawn(plots, "loss")
    assert list(dx) == [1, 2, 3] and list(dy) == [3.0, 2.0, 1.0]
    plots.grab()
    x_lo, x_hi = plots.plots["loss"].getPlotItem().getViewBox().viewRange()[0]
    assert x_lo < 1 and 3 <= x_hi < 10  # the million-point run is gone from the view too
    plots.clear()
    assert all(plots.point_count(k) == 0 for k in plots.curves)


def titles(plots: MetricPlots) -> dict[str, str]:
    return {k: w.getPlotItem().titleLabel.item.toPlainText() for k, w in plots.plots.items()}


def test_titles_fit_a_narrow_window(plots, qtbot):
    plots.append_events([Started("run", 10, 4_194_304, 7_241_732_096, "cuda", "bf16", 256),
                         step(1)])
    plots.resize(700, 520)
    qtbot.waitUntil(lambda: plots.plots["params"].width() < 360)
    shown = titles(plots)
    assert "4.19 M of 7.24 B" in shown["params"] and "…" not in shown["params"]
    for key, widget in plots.plots.items():
        item = widget.getPlotItem()
        width = item.titleLabel.item.boundingRect().width()
        assert width <= widget.width() - item.getAxis("left").width(), key
        view = item.getViewBox()  # a wide title would push the plot past the right edge
        assert view.mapRectToScene(view.boundingRect()).right() <= widget.width(), key
    full = "Trainable parameters: 4.19 M of 7.24 B (0.058 %)"
    assert plots.plots["params"].getPlotItem().titleLabel.toolTip() == full
    plots.resize(330, 400)  # the narrowest the grid goes: 160 px per plot
    qtbot.waitUntil(lambda: plots.plots["params"].width() < 200)
    shown = titles(plots)
    assert shown["params"].startswith("4.19 M")  # the count survives; the rest is a tooltip
    assert shown["grad"] == "Gradient norm" or shown["grad"].endswith("…")


def test_palette_change_recolours_titles_and_keeps_them_short(plots, qtbot):
    plots.append_events([Started("run", 10, 4_194_304, 7_241_732_096, "cuda", "bf16", 256),
                         step(1)])
    plots.resize(700, 520)
    qtbot.waitUntil(lambda: plots.plots["params"].width() < 360)
    pal = plots.palette()
    pal.setColor(QPalette.ColorRole.Base, QColor("#202020"))
    pal.setColor(QPalette.ColorRole.Text, QColor("#e0e0e0"))
    plots.setPalette(pal)
    label = plots.plots["params"].getPlotItem().titleLabel
    assert "#e0e0e0" in label.item.toHtml().lower()
    assert "4.19 M of 7.24 B" in label.item.toPlainText()
    assert plots.plots["loss"].backgroundBrush().color() == QColor("#202020")


def test_grid_drawn_as_filled_rows_matches_pyqtgraphs_lines(plots, monkeypatch):
    """The axes fill grid lines instead of stroking them (much faster for translucent lines);
    the picture must stay the same but for line ends at the edge of a plot's view box."""
    import pyqtgraph as pg
    from graftlab.app.plots import metric_plots
    from PySide6.QtGui import QImage

    plots.append_events([step(i, loss=2.0 + np.sin(i / 30)) for i in range(1, 400)])

    def render() -> np.ndarray:
        for widget in plots.plots.values():
            for side in ("left", "bottom"):
                widget.getPlotItem().getAxis(side).picture = None  # redraw the axis picture
        image = plots.grab().toImage().convertToFormat(QImage.Format.Format_ARGB32)
        return np.frombuffer(image.constBits(), np.uint8).reshape(
            image.height(), image.width(), 4).copy()

    filled = render()
    monkeypatch.setattr(metric_plots._Axis, "drawPicture", pg.AxisItem.drawPicture)
    stroked = render()
    rows, cols = np.nonzero((filled != stroked).any(axis=2))
    edge = np.zeros(len(rows), dtype=bool)
    for widget in plots.plots.values():
        view = widget.getPlotItem().getViewBox()
        r = view.mapRectToScene(view.boundingRect()).translated(widget.pos().x(), widget.pos().y())
        inside_x = (cols >= r.left() - 2) & (cols <= r.right() + 2)
        inside_y = (rows >= r.top() - 2) & (rows <= r.bottom() + 2)
        near_x = (np.abs(cols - r.left()) <= 2) | (np.abs(cols - r.right()) <= 2)
        near_y = (np.abs(rows - r.top()) <= 2) | (np.abs(rows - r.bottom()) <= 2)
        edge |= (inside_x & near_y) | (inside_y & near_x)
    assert edge.all(), (rows[~edge][:5], cols[~edge][:5])
    assert len(rows) < 0.001 * filled.shape[0] * filled.shape[1]


def test_live_ranges_stay_put_while_steps_arrive(plots, qtbot):
    """The step axis spans the planned run; y ranges only move when the data leaves them, so
    the axes are not rebuilt on every batch (the UI-stall bench depends on it)."""
    plots.append_events([Started("/tmp/run", 300, 1000, 100_000, "cpu", "fp32", 64)])
    views = {k: w.getPlotItem().getViewBox() for k, w in plots.plots.items()}
    changes = {k: 0 for k in views}
    for k, view in views.items():
        view.sigRangeChanged.connect(lambda *_a, k=k: changes.__setitem__(k, changes[k] + 1))
    plots.append_events([step(i, loss=3.0 + 0.01 * (i % 7)) for i in range(1, 11)])
    qtbot.wait(30)  # autorange is applied when the views prepare to paint
    x_range = views["loss"].viewRange()[0]
    assert x_range[0] <= 1 and 300 <= x_range[1] < 320  # the whole run, from the start
    before = dict(changes)
    for first in range(11, 301, 10):  # 29 more batches of noise inside the first range
        plots.append_events([step(i, loss=3.0 + 0.01 * (i % 7)) for i in range(first, first + 10)])
        qtbot.wait(5)
    assert changes == before
    assert views["loss"].viewRange()[0] == x_range
    assert plots.point_count("loss") == 300


def test_a_falling_loss_moves_the_y_range_a_few_times_not_every_batch(plots, qtbot):
    plots.append_events([Started("/tmp/run", 1000, 1000, 100_000, "cpu", "fp32", 64)])
    view = plots.plots["loss"].getPlotItem().getViewBox()
    seen: list = []
    for first in range(1, 1001, 10):  # 100 batches; the loss falls from 4 to about 1
        plots.append_events([step(i, loss=1.0 + 3.0 * np.exp(-i / 300)) for i in
                             range(first, first + 10)])
        qtbot.wait(3)
        seen.append(tuple(view.viewRange()[1]))
    lows = [lo for lo, _hi in seen]
    assert lows[-1] <= 1.0 + 3.0 * np.exp(-1000 / 300)  # the data stays in view
    assert 2 <= len(set(seen)) <= 12  # it followed the data, in a few jumps
