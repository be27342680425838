"""Time reading the summaries of 500 run folders (each metrics.jsonl holds 3,000 step lines,
written through the real event writer), as `graftlab runs` and a runs library do.

    python tests/bench/bench_runs_index.py [--runs 500] [--steps 3000]

The last line is JSON: {"runs", "steps_per_run", "read_s", "metrics_mb"}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from graftlab.core.config import RunConfig
from graftlab.core.train.events import Eval, Finished, JsonlSink, Started, Step
from graftlab.core.train.run_index import read_runs


def build(root: Path, runs: int, steps: int) -> int:
    size = 0
    for r in range(runs):
        run = root / f"run-{r:04d}"
        run.mkdir(parents=True)
        cfg = RunConfig()
        cfg.adapter.targets = [f"model.layers.{i}.self_attn.{k}_proj" for i in range(16)
                               for k in "qv"]
        cfg.data.eval_fraction = 0.05
        cfg.training.max_steps = steps
        cfg.training.output_dir = str(run)
        cfg.save(run / "run.yaml")
        sink = JsonlSink(run / "metrics.jsonl")
        sink(Started(str(run), steps, 1000, 10**6, "cpu", "fp32", 512))
        for i in range(1, steps + 1):
            sink(Step(i, 3.0 - i / steps, 2e-4, 1.0, i / steps, 1e3, 64 * i, 0.1 * i, 1.0,
                      500.0))
            if i % 500 == 0:
                sink(Eval(i, 2.8 - i / steps))
        sink(Finished(steps, r % 3 == 0, None, 2.0, 0.1 * steps))
        sink._fh.close()  # no fsync per run: building is not what is measured
        size += (run / "metrics.jsonl").stat().st_size
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = build(root, args.runs, args.steps)
        t = time.perf_counter()
        rows = read_runs([root])
        dt = time.perf_counter() - t
        assert len(rows) == args.runs
        print(json.dumps({"runs": args.runs, "steps_per_run": args.steps,
                          "read_s": round(dt, 3), "metrics_mb": round(size / 2**20, 1)}))


if __name__ == "__main__":
    main()
