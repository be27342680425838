"""`graftlab eval TARGET --data FILE`: task metrics of a trained adapter beside its base.

Registered through ``COMMAND_MODULES`` in graftlab.core.cli; torch and transformers are imported
only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from graftlab.core.config import DATA_FORMATS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="score an adapter on a data file, beside its base model")
    p.add_argument("target", help="a run folder (run.yaml + adapter/) or an adapter folder")
    p.add_argument("--data", required=True, help="jsonl/json/csv/parquet/txt file or demo:<name>")
    p.add_argument("--format", choices=DATA_FORMATS, default=None,
                   help="data format (default: the run's, else detected from the columns)")
    p.add_argument("--base", metavar="MODEL", help="the base model (default: the run's "
                   "model.source or the adapter's base_model_name_or_path)")
    p.add_argument("--max-examples", type=int, metavar="N", help="use the first N examples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def _summary(result: dict[str, Any]) -> list[str]:
    base = result["base"]
    if result["task"] == "causal-lm":
        return [f"causal-lm, {result['n']} examples",
                f"  adapted: loss {result['loss']:.4f}  perplexity {result['perplexity']:.3f}",
                f"  base:    loss {base['loss']:.4f}  perplexity {base['perplexity']:.3f}"]
    lines = [f"sequence-classification, {result['n']} examples, labels "
             f"{', '.join(result['labels'])}"]
    for name, s in (("adapted", result), ("base", base)):
        lines.append(f"  {name + ':':<8} accuracy {s['accuracy']:.4f}  macro-F1 "
                     f"{s['f1_macro']:.4f}  loss {s['loss']:.4f}")
    width = max(len(n) for n in result["labels"])
    lines.append("  confusion (adapted; rows true, columns predicted):")
    for name, row in zip(result["labels"], result["confusion"], strict=True):
        lines.append(f"    {name:<{width}}  " + " ".join(f"{c:>6}" for c in row))
    return lines


def cmd_eval(args: argparse.Namespace) -> int:
    from graftlab.core.train.eval_target import evaluate_target, resolve_target

    target = resolve_target(args.target, args.base)
    result = evaluate_target(target, args.data, args.format, args.max_examples)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print("\n".join(_summary(result)))
    return 0
