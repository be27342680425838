"""Tick "all linear" on a Llama-3-70B-shaped tree (1,047 modules, 560 linear), in the layer tree
widget alone and in the whole main window.

    python tests/bench/bench_layer_tree_70b.py [--repeats 5]

`tree`: LayerTreeWidget.set_tree plus expandAll (`populate_ms`), then apply_preset("all-linear")
from the default expansion (`tick_ms`, best of the repeats; the budget is one frame, 20 ms).
`window`: MainWindow opens the config.json (`open_s`, until the tree has arrived from the
background), then clicks the "all-linear" and "none" preset buttons; `click_ms` is the time from
the click to every count updated (tree, adapter panel), best of the repeats. The tests check the
counts these produce; the times are measured only here. Built from a LlamaConfig saved to a
temporary folder (structure only, no weights). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GRAFTLAB_PRESTART", "0")  # no spare training process for this window
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

DEADLINE_S = 120.0


def wait_until(app: QApplication, done, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {DEADLINE_S:.0f} s")
        app.processEvents()
        time.sleep(0.005)


def bench_tree(app: QApplication, tree, repeats: int) -> dict:
    from graftlab.app.panels.layer_tree import LayerTreeWidget

    populate, ticks = [], []
    for _ in range(repeats):
        w = LayerTreeWidget()
        w.resize(900, 700)
        w.show()
        t0 = time.perf_counter()
        w.set_tree(tree)
        w.view.expandAll()
        app.processEvents()
        populate.append((time.perf_counter() - t0) * 1000)
        w.view.collapseAll()
        w.expand_default()
        app.processEvents()
        t0 = time.perf_counter()
        w.apply_preset("all-linear")
        ticks.append((time.perf_counter() - t0) * 1000)
        w.close()
        w.deleteLater()
        app.processEvents()
    return {"populate_ms": round(min(populate), 1), "tick_ms": round(min(ticks), 2),
            "tick_ms_median": round(statistics.median(ticks), 2), "tick_budget_ms": 20}


def bench_window(app: QApplication, config: Path, repeats: int, tmp: Path) -> dict:
    from graftlab.app.windows.main_window import MainWindow

    settings = QSettings(str(tmp / "bench.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings, open_demo=False, probe_device=False)
    w.resize(1440, 900)
    w.show()
    t0 = time.perf_counter()
    w.open_model(str(config))
    wait_until(app, lambda: w.tree is not None and not w.is_loading(), "opening the model")
    open_s = time.perf_counter() - t0
    clicks = []
    for _ in range(repeats):
        for preset in ("all-linear", "none"):
            t0 = time.perf_counter()
            QTest.mouseClick(w.layer_tree.preset_buttons[preset], Qt.MouseButton.LeftButton)
            elapsed = (time.perf_counter() - t0) * 1000
            if preset == "all-linear":
                clicks.append(elapsed)
            app.processEvents()
    w.close()
    return {"open_s": round(open_s, 2), "click_ms": round(min(clicks), 1),
            "click_ms_median": round(statistics.median(clicks), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    from graftlab.core.model.module_tree import build_tree
    from transformers import LlamaConfig

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        LlamaConfig(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8, intermediate_size=28672,
                    vocab_size=128256).save_pretrained(tmp / "model")
        config = tmp / "model" / "config.json"
        tree = build_tree(str(config))
        result = {"bench": "layer_tree_70b", "modules": len(tree.modules),
                  "tree": bench_tree(app, tree, args.repeats),
                  "window": bench_window(app, config, args.repeats, tmp)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
