"""MetricPlots: batches become curve points; a million points still append and repaint.

Decimation, zoom and titles: test_metric_plots.py; the series itself: test_decimate.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from graftlab.app.plots.metric_plots import MetricPlots, human_count
from graftlab.core.train.events import Eval, JsonlSink, Message, Started, Step, read_metrics


def step(i: int, loss: float = 1.0, grad: float | None = 0.5, gpu: float | None = None) -> Step:
    return Step(i, loss, 1e-4, grad, i / 10, 1000.0, i * 64, i * 0.1, 10.0, 500.0 + i, gpu)


@pytest.fixture
def plots(qtbot):
    w = MetricPlots()
    qtbot.addWidget(w)
    w.resize(900, 600)
    w.show()
    return w


def test_a_batch_fills_every_curve(plots):
    plots.append_events([Started("run", 10, 8192, 702_848, "cpu", "fp32", 256)]
                        + [step(i, loss=2.0 / i) for i in range(1, 6)] + [Eval(5, 0.7)])
    plots.flush()
    for key in ("loss", "loss_ema", "learning_rate", "grad_norm", "tokens_per_s", "memory_mb"):
        x, y = plots.curves[key].getOriginalDataset()
        assert list(x) == [1, 2, 3, 4, 5], key
    assert plots.point_count("eval_loss") == 1
    assert plots.point_count("gpu_memory_mb") == 0  # no GPU: no curve, no legend entry
    assert plots.curves["gpu_memory_mb"].getViewBox() is None
    _x, trainable = plots.curves["trainable"].getOriginalDataset()
    assert list(trainable) == [8192, 8192]
    assert "8.19 K of 703 K" in plots.plots["params"].getPlotItem().titleLabel.text


def test_smoothed_loss_is_bias_corrected_and_survives_nan(plots):
    plots.append_events([step(1, 4.0), step(2, math.nan, grad=None), step(3, 2.0)])
    plots.flush()
    _x, ema = plots.curves["loss_ema"].getOriginalDataset()
    assert ema[0] == pytest.approx(4.0)  # no pull towards zero at the start
    assert ema[1] == pytest.approx(4.0)  # a NaN loss does not poison the average
    assert 2.0 < ema[2] < 4.0
    _x, grad = plots.curves["grad_norm"].getOriginalDataset()
    assert math.isnan(grad[1])
    plots.grab()  # NaN points draw (skipFiniteCheck stays off)


def test_gpu_memory_appears_when_reported(plots):
    plots.append_events([step(1, gpu=100.0), step(2, gpu=120.0)])
    plots.flush()
    assert plots.point_count("gpu_memory_mb") == 2
    assert plots.curves["gpu_memory_mb"].getViewBox() is not None


def test_pyqtgraph_downsampling_and_clip_to_view_are_off(plots):
    """MetricPlots hands curves the visible range, decimated per pixel column, itself."""
    plots.append_events([step(1)])
    plots.flush()
    for key in ("loss", "tokens_per_s"):
        opts = plots.curves[key].opts
        assert not opts["autoDownsample"] and not opts["clipToView"]
        assert not opts["skipFiniteCheck"] and not opts["antialias"]


def test_axes_are_linked_on_step(plots):
    loss_vb = plots.plots["loss"].getPlotItem().getViewBox()
    for key, widget in plots.plots.items():
        if key != "loss":
            assert widget.getPlotItem().getViewBox().linkedView(0) is loss_vb


def test_clear_and_load_history(plots, tmp_path):
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    for ev in [Started("r", 3, 10, 100, "cpu", "fp32", 4), Message("hi"),
               step(1), step(2), Eval(2, 0.5), step(3)]:
        sink(ev)
    sink.close()
    plots.append_events([step(i) for i in range(1, 50)])
    plots.load_history(read_metrics(tmp_path / "metrics.jsonl"))
    assert plots.point_count("loss") == 3 and plots.point_count("eval_loss") == 1
    plots.clear()
    assert all(plots.point_count(k) == 0 for k in plots.curves)
    assert plots.curves["loss"].getViewBox() is None


def test_redraws_are_coalesced(plots, qtbot):
    """Batches arrive up to ten times a second; the curves redraw at most every 250 ms."""
    calls = []
    curve = plots.curves["loss"]
    orig = curve.setData
    curve.setData = lambda *a, **k: (calls.append(len(a[0])), orig(*a, **k))
    for i in range(1, 6):
        plots.append_events([step(i)])
    assert plots.point_count("loss") == 5 and calls == []  # stored, not drawn yet
    qtbot.waitUntil(lambda: calls == [5], timeout=2_000)
    immediate = MetricPlots(redraw_interval_ms=0)
    qtbot.addWidget(immediate)
    immediate.append_events([step(1)])
    assert len(immediate.curves["loss"].getOriginalDataset()[0]) == 1


def test_a_million_points_append_and_repaint(plots):
    n = 1_000_000
    xs = np.arange(1, n + 1, dtype=float)
    plots.append_columns({"loss": (xs, np.exp(-xs / n) + 0.01 * np.sin(xs))})
    plots.grab()
    plots.append_events([step(n + i, 0.5) for i in range(1, 11)])
    plots.flush()
    plots.plots["loss"].grab()  # speed: tests/bench/bench_plot_repaint.py
    assert plots.point_count("loss") == n + 10
    x, _y = plots.curves["loss"].getData()
    assert len(x) < 10_000 and x[-1] == n + 10  # decimated, newest point drawn


def test_human_count():
    assert human_count(8192) == "8.19 K" and human_count(7.0e10) == "70 B"
    assert human_count(80_000, spacing=20_000) == "80 K"
    assert human_count(12) == "12"
