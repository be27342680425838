"""Time opening the runs library on a root of 500 run folders (run.yaml plus a metrics.jsonl of
300 steps each, written through the real event writer by bench_runs_index.build), offscreen:
from creating the window until its table shows every row, median of a few openings. Also
times comparing ten selected runs (their curves are read only then).

    python tests/bench/bench_runs_library.py [--runs 500] [--steps 300] [--repeats 5]

The last line is JSON: {"runs", "steps_per_run", "open_s_median", "open_s", "compare_10_s",
"target_open_s"}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).parent))

from bench_runs_index import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from graftlab.app.settings import AppSettings
    from graftlab.app.windows.runs_library import RunsLibraryWindow
    from PySide6.QtCore import QEvent, QEventLoop, QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        build(root, args.runs, args.steps)
        qs = QSettings(str(Path(tmp) / "bench.ini"), QSettings.Format.IniFormat)
        settings = AppSettings(qs)
        settings.set_runs_roots([str(root)])
        times = []
        window = None
        for _ in range(args.repeats):
            if window is not None:  # the last opening's window is gone before the next one
                window.close()
                window.deleteLater()
                app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
                window = None
                gc.collect()
            loop = QEventLoop()  # a real event loop: it sleeps while the read runs
            t = time.perf_counter()
            window = RunsLibraryWindow(settings)
            window.populated.connect(loop.quit)
            window.show()
            loop.exec()
            app.processEvents()  # the table lays out and paints its first rows
            times.append(time.perf_counter() - t)
            assert window.model.rowCount() == args.runs
        assert window is not None and window.proxy.rowCount() == args.runs
        picked = [r.run_dir for r in window.model.rows[:10]]
        loop = QEventLoop()
        window.compare.shown.connect(loop.quit)
        t = time.perf_counter()
        window.select_runs(picked)
        loop.exec()
        app.processEvents()
        compare_s = time.perf_counter() - t
        assert len(window.compare.overlay.loss_names()) == 10
        window.close()
    print(json.dumps({"runs": args.runs, "steps_per_run": args.steps,
                      "open_s_median": round(statistics.median(times), 3),
                      "open_s": [round(x, 3) for x in times],
                      "compare_10_s": round(compare_s, 3), "target_open_s": 1.0}))


if __name__ == "__main__":
    main()
