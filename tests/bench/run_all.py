"""Run every tests/bench/bench_*.py, collect each final JSON line, write a markdown table.

Run: python tests/bench/run_all.py [--only NAME ...] [--timeout 900]
Each benchmark runs as its own process, one after another (they time things, so never in
parallel). A benchmark that fails, times out or prints no JSON line is recorded as failed and
the others still run; GPU-only ones report "skipped: no GPU" themselves. The table (bench,
figure, target, machine, date) goes to stdout and to tests/bench/RESULTS.md, with each
benchmark's raw JSON line below it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _fmt(value: object, unit: str = "") -> str:
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def summarise(name: str, r: dict) -> tuple[str, str]:
    """(figure, target) for a known benchmark; the JSON's scalar fields for others."""
    if "skipped" in r:
        return f"skipped: {r['skipped']}", "-"
    if name == "train_overhead":
        return f"wall ratio graftlab/plain {_fmt(r['ratio'])}", "<= 1.02"
    if name == "throughput_skewed":
        return (f"non-padding tok/s ratio {_fmt(r['ratio'])} (loop), {_fmt(r['wall_ratio'])} "
                f"(whole process); lengths {r['lengths']['min']}..{r['lengths']['max']}, "
                f"p50 {r['lengths']['p50']}", ">= 1.5")
    if name == "startup":
        return (f"inspect 70B {_fmt(r['inspect_70b_s'], ' s')} (skeleton path "
                f"{_fmt(r['skeleton_path_s'], ' s')}, import torch "
                f"{_fmt(r['import_torch_s'], ' s')}); window {_fmt(r['window_s'], ' s')} "
                f"({_fmt(r['window_without_torch_probe_s'], ' s')} without the torch probe)",
                "inspect <= 3 s; window <= 1.5 s")
    if name == "inspect_70b":
        return (f"{r['total_params']:,} params (exact: {r['exact']}); tree build "
                f"{_fmt(r['tree_build_s'], ' s')}, CLI {_fmt(r['cli_wall_s_min'], ' s')}",
                "exact count")
    if name == "gpu":
        cases = [c if "error" in c else
                 (f"{c['mode']}: {c['tokens_per_s']:,} tok/s, MFU {_fmt(c['mfu'])}, peak "
                  f"{_fmt(c['peak_vram_gib'], ' GiB')}") for c in r["cases"]]
        return "; ".join(str(c) for c in cases) + f" on {r['device']}", "-"
    leaves = [(k, v) for k, v in _leaves(r) if k != "bench" and "target" not in k]
    target = next((f"{k}: {v}" for k, v in _leaves(r) if "target" in k), "-")
    return ", ".join(f"{k} {_fmt(v)}" for k, v in leaves[:6]) or "(see raw JSON)", target


def _leaves(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """Scalar fields of a nested JSON object as (dotted key, value), lists left out."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(value, int | float | str | bool):
        return [(prefix.rstrip("."), value)]
    return []


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import torch

        if torch.cuda.is_available():
            cpu += f", {torch.cuda.get_device_name(0)}"
        else:
            cpu += ", no GPU"
    except ImportError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}"


def run_one(path: Path, timeout: float) -> tuple[dict | None, str, float]:
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout,
                              env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", time.perf_counter() - t
    elapsed = time.perf_counter() - t
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            if proc.returncode != 0:
                data["exit_code"] = proc.returncode
            return data, "", elapsed
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return None, f"exit {proc.returncode}, no JSON line: {tail}", elapsed


HISTORY = "## History"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="bench names (e.g. startup) to run")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--output", default=str(HERE / "RESULTS.md"))
    a = ap.parse_args()
    benches = sorted(HERE.glob("bench_*.py"))
    if a.only:
        benches = [b for b in benches if b.stem.removeprefix("bench_") in a.only]
    host, date = machine(), dt.date.today().isoformat()
    rows, raw = [], []
    for path in benches:
        name = path.stem.removeprefix("bench_")
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        data, error, elapsed = run_one(path, a.timeout)
        if data is None:
            figure, target = f"FAILED: {error}", "-"
        else:
            try:
                figure, target = summarise(data.get("bench", name), data)
            except (KeyError, TypeError) as exc:
                figure, target = f"unreadable result ({exc!r})", "-"
            raw.append(f"- `{path.name}`: `{json.dumps(data)}`")
        rows.append(f"| `{path.name}` | {figure} | {target} | {host} | {date} |")
        print(f"  {name}: {figure} ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    table = "\n".join(["| bench | figure | target | machine | date |", "|---|---|---|---|---|",
                       *rows])
    print(table)
    text = (f"# Benchmark results\n\nWritten by `python tests/bench/run_all.py` on {date}. "
            "Timings come from a shared machine: best of a few alternating runs.\n\n"
            f"{table}\n\n## Raw JSON lines\n\n" + "\n".join(raw) + "\n")
    out = Path(a.output)
    # The hand-written history (what a change made faster, and from what) survives a rerun.
    old = out.read_text(encoding="utf-8") if out.is_file() else ""
    if HISTORY in old:
        text += "\n" + old[old.index(HISTORY):]
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
