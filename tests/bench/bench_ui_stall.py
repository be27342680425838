"""Event-loop stalls while a real run trains at full speed in the worker thread.

A 5 ms QTimer on the GUI thread records how late each tick is. The run (demo model, live plots
connected) is split into the set-up phase (start -> first Step: importing torch, loading data
and weights, wrapping the model) and the steady state (first Step -> finished).

    python tests/bench/bench_ui_stall.py [--steps 150]

Targets (issue 3): steady p99 <= 16 ms and max <= 50 ms; set-up max <= 100 ms.
Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from PySide6.QtCore import QObject, Qt, QTimer, Slot  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

INTERVAL_MS = 5


class StallProbe(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.phase = "idle"
        self.late: dict[str, list[float]] = {"idle": [], "setup": [], "steady": []}
        self.when: dict[str, list[float]] = {"idle": [], "setup": [], "steady": []}
        self._last = time.perf_counter()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._on_tick)

    @Slot()
    def _on_tick(self) -> None:
        now = time.perf_counter()
        self.late[self.phase].append(max(0.0, (now - self._last) * 1000 - INTERVAL_MS))
        self.when[self.phase].append(now)
        self._last = now

    @Slot(object)
    def on_events(self, batch) -> None:
        from graftlab.core.train.events import Step

        if self.phase == "setup" and any(isinstance(e, Step) for e in batch):
            self.phase = "steady"


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def worst(probe: StallProbe, phase: str, since: float, n: int = 5) -> list[tuple[float, float]]:
    pairs = ((round(t - since, 2), round(v, 1)) for t, v in
             zip(probe.when[phase], probe.late[phase], strict=True))
    return sorted(pairs, key=lambda tv: -tv[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--switch-interval", type=float, default=0.001,
                        help="sys.setswitchinterval, as app/__main__.py sets it (s)")
    parser.add_argument("--window", action="store_true",
                        help="the whole main window (tree, heatmap, status bar...) at 1440x900, "
                             "started with its Start action, instead of the plots, training "
                             "panel and log on their own")
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval)
    app = QApplication.instance() or QApplication([])
    os.environ.setdefault("GRAFTLAB_CACHE", str(Path(tempfile.gettempdir()) / "graftlab-bench"))

    from graftlab.app.panels.log_view import LogView
    from graftlab.app.panels.training_panel import TrainingPanel
    from graftlab.app.plots.metric_plots import MetricPlots
    from graftlab.app.run.worker import TrainingRunner
    from graftlab.core.config import RunConfig
    from graftlab.core.model.demo import demo_data_path, demo_model_path

    demo_model_path("tiny-llama")  # build the demo files once, outside the measurement
    demo_data_path("stories")

    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj", "model.layers.*.self_attn.v_proj"]
    cfg.training.max_steps = args.steps
    cfg.training.output_dir = tempfile.mkdtemp(prefix="graftlab-bench-run-")

    probe = StallProbe()
    if args.window:
        from graftlab.app.windows.main_window import MainWindow
        from PySide6.QtCore import QSettings

        settings = QSettings(str(Path(cfg.training.output_dir).parent / "bench-ui-stall.ini"),
                             QSettings.Format.IniFormat)
        window = MainWindow(settings, open_demo=False, probe_device=False)
        window.resize(1440, 900)
        window.show()
        window.apply_run_config(cfg)  # opens the model and the data in the background
        deadline = time.perf_counter() + 3.0  # loaded, and idle long enough to warm up
        while window.tree is None or window.is_loading() or time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.01)
        runner = window.controller
    else:
        plots, panel, log = MetricPlots(), TrainingPanel(probe=False), LogView()
        for w in (plots, panel, log):
            w.show()
        plots.resize(900, 600)
        runner = TrainingRunner()
        runner.events.connect(plots.append_events)
        runner.events.connect(panel.append_events)
        runner.events.connect(log.append_events)
    runner.events.connect(probe.on_events)
    failures: list[str] = []
    runner.failed.connect(failures.append)

    # Drive everything from app.exec(): a polling loop (processEvents + sleep) would keep the
    # GUI thread contending for the GIL and slow the worker several-fold.
    times: dict[str, float] = {}

    def start_run() -> None:
        probe.phase = "setup"
        times["t0"] = time.perf_counter()
        if args.window:
            window.start_training()  # what the Start button does
            times["start_call_ms"] = (time.perf_counter() - times["t0"]) * 1000
        else:
            runner.start(cfg)

    def first_step(_batch) -> None:
        if "first" not in times and probe.phase == "steady":
            times["first"] = time.perf_counter()

    runner.events.connect(first_step)
    runner.finished.connect(app.quit)
    probe._last = time.perf_counter()  # the idle phase starts now, not at construction
    probe.timer.start()
    QTimer.singleShot(500, start_run)  # 0.5 s of idle baseline first
    app.exec()
    t0, t_end = times["t0"], time.perf_counter()
    t_first = times.get("first")
    probe.timer.stop()
    if failures:
        raise SystemExit(failures[0])
    result = {
        "bench": "ui_stall", "mode": "window" if args.window else "panels",
        "steps": args.steps, "cpus": os.cpu_count(),
        "setup_s": round((t_first or t_end) - t0, 2),
        "start_call_ms": round(times.get("start_call_ms", 0.0), 1),
        "steady_s": round(t_end - (t_first or t_end), 2),
        "steps_per_s": round(args.steps / max(t_end - (t_first or t_end), 1e-9), 1),
        "idle": stats(probe.late["idle"]), "setup": stats(probe.late["setup"]),
        "steady": stats(probe.late["steady"]),
        # the five worst stalls of each phase: (seconds after Start / the first step, ms late)
        "setup_worst": worst(probe, "setup", t0),
        "steady_worst": worst(probe, "steady", t_first or t0),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
