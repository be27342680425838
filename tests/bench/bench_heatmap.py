"""Refresh the layer heatmap of a Llama-3-70B-shaped adapter (80 layers × 7 kinds, 560 modules).

    python tests/bench/bench_heatmap.py [--repeats 50] [--size 640x900]

`update_norms`: one UpdateNorms event with 560 fresh values goes through HeatmapPanel.append_events
(the runner's slot) and the heatmap is repainted synchronously: the time from the event to new
pixels. `plan`: the same for HeatmapPanel.show_plan (a tick in the layer tree). Built from a
LlamaConfig saved to a temporary folder (structure only, no weights). Prints one JSON line.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max_ms": round(ordered[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--size", default="640x900")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    from graftlab.app.panels.heatmap_panel import HeatmapPanel
    from graftlab.core.adapter.plan import plan_adapter
    from graftlab.core.config import AdapterConfig
    from graftlab.core.model.module_tree import build_tree
    from graftlab.core.train.events import UpdateNorms
    from transformers import LlamaConfig

    with tempfile.TemporaryDirectory() as folder:
        LlamaConfig(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8, intermediate_size=28672,
                    vocab_size=128256).save_pretrained(folder)
        tree = build_tree(str(Path(folder) / "config.json"))
    plan = plan_adapter(tree, AdapterConfig(targets=tree.preset("all-linear"), rank=16))
    names = [m.name for m in plan.modules]
    width, height = (int(v) for v in args.size.split("x"))
    panel = HeatmapPanel()
    panel.resize(width, height)
    panel.show()
    panel.show_plan(tree, plan)
    app.processEvents()
    rng = np.random.default_rng(0)
    update_times, plan_times = [], []
    for step in range(args.repeats + 3):
        sizes = {n: float(v) for n, v in zip(names, 10 ** rng.uniform(-5, -1, len(names)),
                                             strict=True)}
        t0 = time.perf_counter()
        panel.append_events([UpdateNorms(step, sizes)])
        panel.heatmap.repaint()  # synchronous paint: the new colours are on screen
        if step >= 3:  # the first paints build caches
            update_times.append((time.perf_counter() - t0) * 1000)
        app.processEvents()
    assert all(panel.heatmap.value_of(n) == v for n, v in sizes.items())
    for step in range(args.repeats + 3):
        t0 = time.perf_counter()
        panel.show_plan(tree, plan)
        panel.heatmap.repaint()
        if step >= 3:
            plan_times.append((time.perf_counter() - t0) * 1000)
        app.processEvents()
    print(json.dumps({"bench": "heatmap_refresh", "modules": len(names),
                      "grid": [tree.num_layers, len(tree.kinds())], "widget": args.size,
                      "update_norms": stats(update_times), "plan": stats(plan_times)}))


if __name__ == "__main__":
    main()
