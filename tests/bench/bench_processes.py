"""One process against two (`graftlab train --nproc 2`, DDP under torchrun), the same run and
the same global batch (1 × B against 2 × B/2), on a small Llama-shaped model and rows of 128
tokens.

Run: python tests/bench/bench_processes.py [--steps 30] [--batch 8] [--repeats 2]
Speed: tokens/s over the steady part of the training loop, as the run reports it (the Trainer's
token count gathered over all ranks, divided by active time), median of the logged steps after
the first few; plus each command's wall time. Prints one JSON line per repeat and a final JSON
line with the medians and the ratio two/one.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZE = {"hidden": 256, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 688}


def make_model(root: Path) -> Path:
    from graftlab.core.model.demo import save_tiny_model

    return save_tiny_model("llama", root / "model", size=SIZE)


def write_run(model: Path, root: Path, steps: int, batch: int, name: str) -> Path:
    from graftlab.core.config import RunConfig

    cfg = RunConfig()
    cfg.model.source = str(model)
    cfg.data.path = str(root / "data.jsonl")
    cfg.data.max_length = 128  # every row is longer: uniform batches of 128 tokens
    cfg.adapter.targets = ["*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj", "*.gate_proj",
                           "*.up_proj", "*.down_proj"]
    cfg.adapter.rank, cfg.adapter.alpha = 16, 32
    cfg.training.max_steps = steps
    cfg.training.batch_size = batch
    cfg.training.update_norms_every = 0
    cfg.training.checkpoint_minutes = 0
    cfg.training.output_dir = str(root / name)
    path = root / f"{name}.yaml"
    cfg.save(path)
    return path


def measure(run: Path, extra: list[str]) -> dict[str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "graftlab.core.cli", "train", str(run), *extra],
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    out = Path(done.stdout.split("run folder:")[-1].strip())
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
             if '"event": "step"' in x]
    steady = [s["tokens_per_s"] for s in steps[3:]] or [steps[-1]["tokens_per_s"]]
    return {"tokens_per_s": statistics.median(steady), "wall_s": wall,
            "tokens": steps[-1]["tokens_seen"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8, help="global batch (split over 2 ranks)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    model = make_model(root)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    with open(root / "data.jsonl", "w", encoding="utf-8") as fh:
        for _ in range(2000):
            fh.write(json.dumps({"text": " ".join(rng.choices(words, k=300))}) + "\n")
    rows = []
    for r in range(args.repeats):
        one = write_run(model, root, args.steps, args.batch, f"one-{r}")
        two = write_run(model, root, args.steps, args.batch // 2, f"two-{r}")
        order = [("one", one, []), ("two", two, ["--nproc", "2"])]
        row = {name: measure(path, extra) for name, path, extra in
               (order if r % 2 == 0 else order[::-1])}
        assert row["one"]["tokens"] == row["two"]["tokens"], row  # the same examples
        rows.append(row)
        print(json.dumps({"repeat": r, **row}), flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(row[name][key] for row in rows)

    print(json.dumps({
        "bench": "processes", "steps": args.steps, "global_batch": args.batch,
        "one_tokens_per_s": round(med("one", "tokens_per_s")),
        "two_tokens_per_s": round(med("two", "tokens_per_s")),
        "ratio_two_over_one": round(med("two", "tokens_per_s") / med("one", "tokens_per_s"), 3),
        "one_wall_s": round(med("one", "wall_s"), 1), "two_wall_s": round(med("two", "wall_s"), 1),
    }))


if __name__ == "__main__":
    main()
