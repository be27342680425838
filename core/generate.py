"""`graftlab generate`: continue a prompt with the base model and with each adapter.

The base is loaded once; each adapter is attached to it (graftlab.core.adapter.playground),
and the base side runs with every adapter disabled. Greedy unless a temperature is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from graftlab.core.errors import UserError

RESERVED = ("prompt", "base", "adapted")  # --json fields that an adapter name must not take


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="continue a prompt with the base model and with "
                       "its adapter(s), side by side")
    p.add_argument("target", help="a run folder, an adapter folder (its base comes from "
                   "adapter_config.json or the run's run.yaml) or a model")
    p.add_argument("--prompt", required=True, help="the text to continue (or the user turn "
                   "with --chat)")
    p.add_argument("--chat", action="store_true", help="render the prompt with the model's "
                   "chat template (a user turn, plus --system)")
    p.add_argument("--system", help="system turn for --chat")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    p.add_argument("--temperature", type=float, metavar="T", help="sample at this "
                   "temperature (default: greedy decoding)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling "
                   "(with --temperature)")
    p.add_argument("--seed", type=int, metavar="S", help="seed for sampling")
    p.add_argument("--adapter", action="extend", nargs="+", default=[], metavar="DIR",
                   help="more adapter (or run) folders to attach to the same base")
    p.add_argument("--json", action="store_true", help='print {"prompt", "base", "adapted"} '
                   "(with several adapters: one field per adapter name)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_generate)


def _unique_name(name: str, taken: set[str]) -> str:
    out, n = name, 2
    while out in taken or out in RESERVED:
        out, n = f"{name}_{n}", n + 1
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise UserError("the prompt is empty; pass the text to continue with --prompt.",
                        field="prompt")
    from graftlab.core.adapter.playground import DecodeOptions, Playground
    from graftlab.core.adapter.targets import BASE, adapter_name, read_target
    from graftlab.core.model.loading import quiet_libraries

    options = DecodeOptions(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    options.check()  # before any weight is loaded
    target = read_target(args.target)
    folders = ([target.adapter_dir] if target.adapter_dir is not None else []) + list(
        args.adapter)
    quiet_libraries()
    playground = Playground(target.base, target.task, trust_remote_code=args.trust_remote_code,
                            num_labels=target.num_labels,
                            label_names=list(target.label_names or []) or None)
    if args.chat and not playground.has_chat_template:
        raise UserError(f"{target.base} has no chat template, so --chat cannot be used; leave "
                        "it out to continue the prompt as plain text.", field="chat")
    names: list[str] = []
    for folder in folders:
        from pathlib import Path

        wanted = _unique_name(adapter_name(Path(folder)), set(names))
        name = playground.attach(folder, wanted)
        if name not in names:  # the same folder twice is one adapter
            names.append(name)
    texts: dict[str, str] = {}
    for side in [BASE, *names]:
        if not args.json:
            sys.stdout.write(f"== {side} ==\n")
            sys.stdout.flush()
        stream = None if args.json else _print_piece
        texts[side] = playground.generate(args.prompt, side, system=args.system,
                                          chat=args.chat, options=options, on_text=stream)
        if not args.json:
            sys.stdout.write("\n")
    if args.json:
        out: dict[str, Any] = {"prompt": args.prompt, "base": texts[BASE]}
        if len(names) == 1:
            out["adapted"] = texts[names[0]]
        else:
            out.update({n: texts[n] for n in names})
        json.dump(out, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    return 0


def _print_piece(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()
