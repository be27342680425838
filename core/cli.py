"""The headless `graftlab` subcommands (the GUI launch lives in app/launcher.py, so core never
imports app or Qt).

Exit codes: 0 success; 2 invalid input (one line ``error: ...`` on stderr, no traceback);
1 internal error (with a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from graftlab.core.errors import UserError
from graftlab.core.train.events import Download, Event, Finished, Message, Started, Step


def _setup_env() -> None:
    import logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes says on import, in every process, that an optional CPU kernel package is
    # missing; 4-bit training works without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


class ProgressPrinter:
    """A one-line progress bar on a terminal; plain log lines otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr  # now, not at import
        self.width = width
        self.tty = self.stream.isatty()
        self.total = 0
        self._last_print = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started):
            self.total = event.total_steps
            self._line(f"training {event.trainable_params:,} of {event.base_params:,} "
                       f"parameters ({100 * event.trainable_params / event.base_params:.3f}%) "
                       f"on {event.device} ({event.precision}), {event.num_examples} examples",
                       end=True)
        elif isinstance(event, Step):
            now = time.monotonic()
            if self.tty or now - self._last_print > 2.0 or event.step == self.total:
                self._last_print = now
                frac = event.step / self.total if self.total else 0.0
                filled = int(frac * self.width)
                bar = "#" * filled + "-" * (self.width - filled)
                eta = f" eta {event.eta_s:5.0f}s" if event.eta_s is not None else ""
                self._line(f"[{bar}] {event.step}/{self.total} loss {event.loss:.4f} "
                           f"{event.tokens_per_s:,.0f} tok/s{eta}", end=not self.tty)
        elif isinstance(event, Download):
            frac = event.done_bytes / event.total_bytes if event.total_bytes else 1.0
            filled = int(frac * self.width)
            done = event.done_bytes >= event.total_bytes
            self._line(f"downloading weights [{'#' * filled}{'-' * (self.width - filled)}] "
                       f"{event.done_bytes / 2**30:.2f} of {event.total_bytes / 2**30:.2f} GB "
                       f"({event.file})", end=done or not self.tty)
        elif isinstance(event, Message) and event.level != "info":
            self._line(f"{event.level}: {event.text}", end=True)
        elif isinstance(event, Message):
            self._line(event.text, end=True)
        elif isinstance(event, Finished):
            what = "stopped" if event.stopped_early else "finished"
            self._line(f"{what} at step {event.step}; adapter: {event.adapter_dir}", end=True)

    def _line(self, text: str, end: bool) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if end else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def cmd_train(args: argparse.Namespace) -> int:
    from graftlab.core.config import RunConfig, validate
    from graftlab.core.train.session import TrainingSession

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "run.yaml").is_file():
            raise UserError(f"{run_dir} is not a Graftlab run folder (no run.yaml); pass the "
                            "folder a run was written to.")
        cfg = RunConfig.load(run_dir / "run.yaml")
        cfg.training.output_dir = str(run_dir)
    elif not args.run:
        raise UserError("no run file given; use `graftlab train RUN.yaml` or "
                        "`graftlab train --resume RUN_DIR`.")
    else:
        cfg = RunConfig.load(args.run)
        if args.output:
            cfg.training.output_dir = args.output
    if args.max_steps is not None:
        cfg.training.max_steps = args.max_steps
    validate(cfg, args.resume or args.run)
    resume = bool(args.resume)
    if args.detach:
        from graftlab.core.train.run_dir import check_run_dir

        run_dir = Path(cfg.training.output_dir).absolute()
        return _detach(args, run_dir if resume else check_run_dir(run_dir))
    launch = _launch_of(args, cfg)
    if launch is not None:  # several processes: torchrun runs this command once per rank
        from graftlab.core.train.launch import run_torchrun

        cfg.training.processes = launch.nproc
        if launch.node_rank == 0:  # bad input fails here, before any process starts (its
            # warnings are rank 0's to print)
            TrainingSession(cfg, [], resume=resume, strict=args.strict).check(claim=False)
        return run_torchrun(launch, _rank_argv(args, Path(cfg.training.output_dir).absolute()))
    return _run_session(TrainingSession(cfg, [ProgressPrinter()], resume=resume,
                                        strict=args.strict))


def _launch_of(args: argparse.Namespace, cfg: Any) -> Any:
    """The torchrun job to start, or None: one process, or already one rank of a job."""
    from graftlab.core.train.distributed import under_launcher
    from graftlab.core.train.launch import Launch, check_launch

    if under_launcher():
        return None
    launch = Launch(args.nproc or cfg.training.processes, args.nnodes, args.node_rank,
                    args.rdzv_endpoint)
    if not launch.wanted:
        return None
    check_launch(launch)
    return launch


def _rank_argv(args: argparse.Namespace, run_dir: Any) -> list[str]:
    """`train ...` as each rank (or the detached process) runs it: the same run, one folder."""
    argv = ["train", *(["--resume", str(run_dir)] if args.resume else
                       [str(Path(args.run).absolute()), "--output", str(run_dir)])]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    if args.strict:
        argv.append("--strict")
    return argv


def _detach(args: argparse.Namespace, run_dir: Any) -> int:
    """`--detach`: the same command, minus the flag, in its own session (with its launch
    flags: the detached process starts torchrun itself)."""
    from graftlab.core.live_commands import start_detached

    argv = _rank_argv(args, run_dir)
    if args.nproc:
        argv += ["--nproc", str(args.nproc)]
    if args.nnodes > 1:
        argv += ["--nnodes", str(args.nnodes), "--node-rank", str(args.node_rank),
                 "--rdzv-endpoint", str(args.rdzv_endpoint)]
    return start_detached(argv, run_dir)


def _run_session(session: Any) -> int:
    from graftlab.core.train.distributed import is_main

    def on_sigint(signum: int, frame: Any) -> None:  # first Ctrl+C: stop after this step, save
        if session.stop_requested:
            raise KeyboardInterrupt
        sys.stderr.write("\nstopping after the current step (Ctrl+C again to abort)...\n")
        session.request_stop(save=True)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = session.run()
    finally:
        signal.signal(signal.SIGINT, old)
    if is_main():  # one line for a torchrun job, not one per process
        print(f"run folder: {result.run_dir}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from graftlab.core.model.module_tree import build_tree
    from graftlab.core.model.shape_tree import quick_tree

    # Llama-family configs need no torch (~3 s of imports on 2 cores); others build the skeleton.
    tree = quick_tree(args.model, args.task, args.trust_remote_code) or build_tree(
        args.model, args.task, args.trust_remote_code)
    if args.json:
        json.dump(tree.to_json(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    lora = tree.lora_modules()
    print(f"{tree.model_type} ({tree.task}), {tree.total_params:,} parameters, {tree.dtype}, "
          f"{tree.num_layers} layers")
    print(f"{len(lora)} modules can carry LoRA; kinds per layer: {', '.join(tree.kinds())}")
    for preset in ("attention", "mlp", "all-linear"):
        print(f"  preset {preset}: {len(tree.preset(preset))} modules")
    width = max((len(m.name) for m in lora), default=10)
    shown = lora if args.all or len(lora) <= 60 else [m for m in lora if m.layer in (None, 0)]
    for m in shown:
        print(f"  {m.name:<{width}}  {m.cls:<10} {str(m.shape):<18} {m.params:>14,}")
    if len(shown) < len(lora):
        print(f"  ... {len(lora) - len(shown)} more (same kinds in every layer; --all lists "
              "them)")
    return 0


def cmd_adapter_info(args: argparse.Namespace) -> int:
    from graftlab.core.adapter.compat import check_adapter
    from graftlab.core.adapter.info import compare_adapters, read_adapter

    info = read_adapter(args.adapter)
    issues = check_adapter(info)
    if args.compare:
        comparison = compare_adapters(info, args.compare)
        if args.json:
            json.dump(comparison.to_json(), sys.stdout)
            sys.stdout.write("\n")
            return 0
        print(f"{len(comparison.common)} modules adapted by both; {len(comparison.only_a)} only "
              f"in {args.adapter}, {len(comparison.only_b)} only in {args.compare}")
        for m in comparison.common:
            cos = "n/a" if m.cosine is None else f"{m.cosine:+.3f}"
            print(f"  {m.name:<60} cosine {cos}  norm ratio {m.norm_ratio:.3g}")
        return 0
    if args.json:
        json.dump(info.to_json() | {"compatibility": [i.to_json() for i in issues]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"LoRA adapter for {info.base_model or '(base model not recorded)'}: "
          f"{info.variant}, {len(info.modules)} modules, {info.total_params:,} parameters, "
          f"{info.file_size:,} bytes")
    width = max((len(m.name) for m in info.modules), default=10)
    print(f"  {'module':<{width}}  rank  alpha    scale   ‖ΔW‖_F  eff.rank")
    for m in info.modules:
        print(f"  {m.name:<{width}}  {m.rank:>4}  {m.alpha:>5g}  {m.scale:>7.3g}  "
              f"{m.delta_norm:>7.3g}  {m.effective_rank:>8.2f}")
    for s in info.saved_modules:
        print(f"  saved in full: {s.name} ({s.params:,} parameters)")
    for issue in issues:
        print(f"{issue.severity} [{issue.target}]: {issue.message}")
    return 0


def print_note(sentence: str) -> None:
    sys.stderr.write(f"note: {sentence}\n")


def cmd_merge(args: argparse.Namespace) -> int:
    from graftlab.core.adapter.export import export_merged
    from graftlab.core.train.session import download_reporter

    progress = download_reporter(ProgressPrinter())
    files = export_merged(args.base, args.adapter, args.output, args.task,
                          args.trust_remote_code, overwrite=args.overwrite,
                          on_download=progress, on_note=print_note)
    for path, size in files:
        print(f"{size:>14,}  {path}")
    return 0


# Further subcommands live in a module of their own under graftlab.core that defines
# ``add_parser(sub)`` (light imports at module level; heavy ones inside the command function).
COMMAND_MODULES: tuple[str, ...] = (
    "graftlab.core.live_commands",
    "graftlab.core.train.preflight",
    "graftlab.core.generate",
    "graftlab.core.eval_command",
    "graftlab.core.runs_command",
    "graftlab.core.export_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graftlab", description="See and steer LoRA fine-tuning. Without a command, "
        "opens the desktop app.", epilog="`graftlab install-desktop [--prefix DIR]` adds the app "
        "to your desktop's menu.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("train", help="train an adapter from a run.yaml, without a display")
    p.add_argument("run", nargs="?", help="path to run.yaml")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from "
                   "its last complete checkpoint")
    p.add_argument("--output", help="run folder (overrides training.output_dir)")
    p.add_argument("--max-steps", type=int, help="override training.max_steps")
    p.add_argument("--strict", action="store_true", help="treat a compatibility finding "
                   "(vLLM, llama.cpp, PEFT) as an error (exit 2) before anything is loaded")
    p.add_argument("--detach", action="store_true", help="train in the background (it outlives "
                   "the terminal; output in RUN/train.log) and return at once, printing the run "
                   "folder; control it with `graftlab status|pause|continue|stop RUN`")
    g = p.add_argument_group("several processes (torchrun; also from `training.processes`)")
    g.add_argument("--nproc", type=int, help="training processes on this machine, one per GPU "
                   "(data-parallel; starts torchrun)")
    g.add_argument("--nnodes", type=int, default=1, help="machines in the job (the same line "
                   "runs on each)")
    g.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0 to "
                   "NNODES-1 (0 on the --rdzv-endpoint machine)")
    g.add_argument("--rdzv-endpoint", help="HOST:PORT of machine 0, the same on every machine")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("inspect", help="list a model's modules and what LoRA can wrap")
    p.add_argument("model", help="model folder, config.json, cached hub id, or demo:<name>")
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    p.add_argument("--all", action="store_true", help="list every LoRA-capable module")
    p.add_argument("--task", default="auto", choices=["auto", "causal-lm",
                                                      "sequence-classification"])
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("adapter-info", help="inspect any PEFT LoRA adapter folder (no base "
                       "model needed)")
    p.add_argument("adapter", help="adapter folder (adapter_config.json + safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--compare", metavar="OTHER", help="compare with another adapter folder")
    p.set_defaults(func=cmd_adapter_info)
    p = sub.add_parser("merge", help="merge an adapter into its base and save a full model")
    p.add_argument("adapter", help="PEFT adapter folder (a run's adapter/)")
    p.add_argument("--base", required=True, help="the base model (folder, cached id, demo:)")
    p.add_argument("--output", required=True, help="folder for the merged model (new, empty, "
                   "or an earlier Graftlab export with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier Graftlab "
                   "export at --output (kept until the new one is complete)")
    p.add_argument("--task", default="auto", choices=["auto", "causal-lm",
                                                      "sequence-classification"])
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_merge)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _setup_env()
    if argv[:1] == ["_session"]:  # hidden: the GUI's training process (frozen builds)
        from graftlab.core.process.child import child_main

        return child_main()
    if argv[:1] == ["_call"]:  # hidden: one probe or merge out of the window (frozen builds)
        from graftlab.core.process.oneshot import oneshot_main

        return oneshot_main()
    if argv[:1] == ["_try"]:  # hidden: the Try tab's model process (frozen builds)
        from graftlab.core.process.try_child import try_main

        return try_main()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UserError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; the run folder keeps what was written so far.\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
