"""Append to and repaint a 1,000,000-point loss curve (per-pixel min/max decimation).

    python tests/bench/bench_plot_repaint.py [--points 1000000] [--repeats 30]

Each repeat appends one batch of 10 Step events to MetricPlots (every curve gets points) and
repaints. `one_curve`: the loss curve holds the million points and the 800x400 loss plot is
repainted (the issue's target: <= 16 ms). `full_grid`: all six metric curves hold a million points
each and the whole 1600x1200 grid is repainted. `loss_points_drawn`: what the loss curve was
handed on the last repeat (about two per pixel column). The x axis follows the run, so a batch
that lengthens it by less than a pixel leaves the view alone; `append_plus_repaint_ms_max`
includes the repaints where it moved. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    results = {"bench": "plot_repaint"}
    for mode in ("one_curve", "full_grid"):
        results[mode] = measure(app, mode, args.points, args.repeats)
    print(json.dumps(results))


def measure(app, mode: str, n: int, repeats: int) -> dict:
    from graftlab.app.plots.metric_plots import MetricPlots
    from graftlab.core.train.events import Step

    plots = MetricPlots()
    plots.resize(1600, 1200)  # each of the six plots about 800x400
    plots.show()
    xs = np.arange(1, n + 1, dtype=float)
    rng = np.random.default_rng(0)
    columns = {"loss": (xs, np.exp(-xs / n * 3) * 4 + rng.normal(0, 0.1, n))}
    if mode == "full_grid":  # every curve of every plot holds a million points
        columns |= {"loss_ema": (xs, np.exp(-xs / n * 3) * 4),
                    "learning_rate": (xs, 2e-4 * (1 - xs / (2 * n))),
                    "grad_norm": (xs, np.abs(rng.normal(1, 0.3, n))),
                    "tokens_per_s": (xs, rng.normal(3000, 100, n)),
                    "memory_mb": (xs, 800 + xs / n * 100)}
    t0 = time.perf_counter()
    plots.append_columns(columns)
    plots.flush()
    app.processEvents()
    plots.grab()
    fill_ms = (time.perf_counter() - t0) * 1000
    loss_plot = plots.plots["loss"]
    append_ms, repaint_ms, total_ms = [], [], []
    step = n
    for _ in range(repeats):
        batch = []
        for _i in range(10):
            step += 1
            batch.append(Step(step, 0.2, 1e-4, 1.0, 1.0, 3000.0, step, 1.0, 1.0, 900.0))
        t0 = time.perf_counter()
        plots.append_events(batch)
        plots.flush()  # the redraw the coalescing timer would do
        t1 = time.perf_counter()
        (loss_plot if mode == "one_curve" else plots).grab()
        t2 = time.perf_counter()
        append_ms.append((t1 - t0) * 1000)
        repaint_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
    size = loss_plot.size()
    drawn = len(plots.curves["loss"].getData()[0])
    plots.close()
    return {
        "points": plots.point_count("loss"), "loss_plot_px": [size.width(), size.height()],
        "loss_points_drawn": drawn,
        "repainted": "loss plot" if mode == "one_curve" else "all six plots",
        "initial_fill_and_paint_ms": round(fill_ms, 1),
        "append_ms_median": round(float(np.median(append_ms)), 2),
        "repaint_ms_median": round(float(np.median(repaint_ms)), 2),
        "append_plus_repaint_ms_median": round(float(np.median(total_ms)), 2),
        "append_plus_repaint_ms_max": round(float(np.max(total_ms)), 2),
    }


if __name__ == "__main__":
    main()
