"""`graftlab export ADAPTER --format peft|uniform|merged --output PATH`: an adapter folder for
the runtime that will serve it.

- ``peft``: the adapter as trained (PEFT, transformers).
- ``uniform``: one rank and one alpha, each module's scale folded into lora_B, for runtimes that
  apply one scale to every module (vLLM; llama.cpp's converter) — see
  graftlab.core.adapter.uniform.
- ``merged``: the adapter merged into its base, a full model folder (as `graftlab merge`).

Every format keeps the rules of all exports: a Graftlab marker in the folder, a foreign folder
refused, an earlier export replaced only with ``--overwrite`` and only once the new one is
complete.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

FORMATS = ("peft", "uniform", "merged")


def _print_note(sentence: str) -> None:
    print(f"note: {sentence}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    from graftlab.core.errors import UserError

    if args.format == "peft":
        from graftlab.core.adapter.export import export_adapter

        files = export_adapter(args.adapter, args.output, overwrite=args.overwrite)
    elif args.format == "uniform":
        from graftlab.core.adapter.uniform import export_uniform

        files = export_uniform(args.adapter, args.output, overwrite=args.overwrite)
    else:
        if not args.base:
            raise UserError("`--format merged` needs the base model: add --base MODEL (a "
                            "folder, a cached hub id or demo:<name>).", field="base")
        from graftlab.core.adapter.export import export_merged

        files = export_merged(args.base, args.adapter, args.output, "auto", False,
                              overwrite=args.overwrite, on_note=_print_note)
    for path, size in files:
        print(f"{size:>14,}  {path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write an adapter for its runtime: peft, uniform (vLLM, "
                       "llama.cpp) or merged")
    p.add_argument("adapter", help="PEFT adapter folder (a run's adapter/)")
    p.add_argument("--format", choices=FORMATS, default="peft",
                   help="peft (as trained), uniform (one rank and alpha, scales folded into "
                   "lora_B), merged (a full model; needs --base)")
    p.add_argument("--base", help="the base model, for --format merged")
    p.add_argument("--output", required=True, help="folder to write (new, empty, or an "
                   "earlier Graftlab export with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier Graftlab "
                   "export at --output (kept until the new one is complete)")
    p.set_defaults(func=cmd_export)
