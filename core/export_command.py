"""`graftlab export ADAPTER --format peft|uniform|merged --output PATH`: an adapter folder for
the runtime that will serve it.

- ``peft``: the adapter as trained (PEFT, transformers).
- ``uniform``: one rank and one alpha, each module's scale folded into lora_B, for runtimes that
  apply one scale to every module (vLLM; llama.cpp's converter) — see
  graftlab.core.adapter.uniform.
- ``gguf``: a llama.cpp LoRA file (``adapter.gguf`` and the model card in the folder, or the
  file itself when ``--output`` ends in ``.gguf``), scales folded so llama.cpp's alpha/rank
  rule gives PEFT's update — see graftlab.core.adapter.gguf_export.
- ``merged``: the adapter merged into its base, a full model folder (as `graftlab merge`).

Every format keeps the rules of all exports: a Graftlab marker in the folder, a foreign folder
refused, an earlier export replaced only with ``--overwrite`` and only once the new one is
complete.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from graftlab.core.adapter.formats import FORMATS


def _print_note(sentence: str) -> None:
    print(f"note: {sentence}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    from graftlab.core.adapter.formats import export_as

    files = export_as(args.format, args.adapter, args.output, args.base,
                      overwrite=args.overwrite, on_note=_print_note)
    for path, size in files:
        print(f"{size:>14,}  {path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write an adapter for its runtime: peft, uniform (vLLM), "
                       "gguf (llama.cpp, Ollama) or merged")
    p.add_argument("adapter", help="PEFT adapter folder (a run's adapter/)")
    p.add_argument("--format", choices=FORMATS, default="peft",
                   help="peft (as trained), uniform (one rank and alpha, scales folded into "
                   "lora_B), gguf (a llama.cpp LoRA file), merged (a full model; needs --base)")
    p.add_argument("--base", help="the base model: needed for --format merged; for gguf only "
                   "its config.json is read (default: the base the adapter names)")
    p.add_argument("--output", required=True, help="folder to write (new, empty, or an "
                   "earlier Graftlab export with --overwrite); for gguf also FILE.gguf")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier Graftlab "
                   "export at --output (kept until the new one is complete)")
    p.set_defaults(func=cmd_export)
