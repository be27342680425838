"""`graftlab runs [DIR ...] [--json]`: every run folder under DIR with its status, model,
progress, final loss and eval metric (graftlab.core.train.run_index reads them cheaply)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from graftlab.core.config import TrainingConfig

DEFAULT_RUNS_ROOT = str(Path(TrainingConfig().output_dir).parent)  # where runs go by default


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_runs(args: argparse.Namespace) -> int:
    from graftlab.core.errors import UserError
    from graftlab.core.train.run_index import read_runs

    roots = args.dirs or [DEFAULT_RUNS_ROOT]
    for r in roots:
        if not Path(r).expanduser().is_dir():
            raise UserError(f"runs folder {r} does not exist; pass a folder that holds run "
                            "folders (default: ./runs).")
    rows = read_runs(roots)
    if args.json:
        json.dump({"runs": [r.to_json() for r in rows]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print(f"no runs in {', '.join(roots)}")
        return 0
    width = max(len(r.run_dir) for r in rows)
    print(f"{'run':<{width}}  {'status':<8}  {'steps':>11}  {'loss':>8}  {'eval':>8}  "
          f"{'started':<16}  {'time':>7}  model")
    for r in rows:
        steps = f"{r.steps}/{r.max_steps if r.max_steps is not None else '?'}"
        when = dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M") \
            if r.started_at else "-"
        print(f"{r.run_dir:<{width}}  {r.status:<8}  {steps:>11}  {_fmt(r.final_loss, '.4f'):>8}"
              f"  {_fmt(r.eval, '.4f'):>8}  {when:<16}  {_fmt(r.duration_s, '.0f'):>6}s  "
              f"{r.model}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list run folders: status, progress, loss, eval")
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help=f"folders that hold runs (default: {DEFAULT_RUNS_ROOT})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)
