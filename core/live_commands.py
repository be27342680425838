"""`graftlab status | pause | continue | stop DIR`, and the start of `graftlab train --detach`.

They work on any run folder of the user's, whoever started the run (a terminal, the window, a
detached start), through the files described in graftlab.core.train.live; no network port.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from graftlab.core.errors import UserError

DETACH_LOG = "train.log"


def _print_status(status: object, as_json: bool) -> None:
    from graftlab.core.train.live import RunStatus

    assert isinstance(status, RunStatus)
    if as_json:
        print(json.dumps({k: v for k, v in status.to_dict().items() if k != "run_dir"}))
        return
    steps = f"step {status.step}" + (f"/{status.max_steps}" if status.max_steps else "")
    loss = f", loss {status.loss:.4f}" if isinstance(status.loss, int | float) else ""
    pid = f", pid {status.pid}" if status.pid and status.state in ("running", "paused",
                                                                     "stopping") else ""
    why = f" ({status.message})" if status.message else ""
    print(f"{status.run_dir}: {status.state}, {steps}{loss}{pid}{why}")


def cmd_status(args: argparse.Namespace) -> int:
    from graftlab.core.train.live import run_status

    _print_status(run_status(args.run_dir), args.json)
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from graftlab.core.train.live import send_control, wait_for_state

    cmd = args.command
    send_control(args.run_dir, cmd, save=not getattr(args, "no_save", False))
    if args.no_wait:
        print(f"{args.run_dir}: asked to {cmd}")
        return 0
    want = {"pause": {"paused"}, "continue": {"running"},
            "stop": {"stopped", "finished", "failed", "killed"}}[cmd]
    if cmd == "pause":
        sys.stderr.write("pausing after the current step...\n")
    elif cmd == "stop":
        sys.stderr.write("stopping after the current step"
                         + (" and saving the adapter" if not args.no_save else "") + "...\n")
    status = wait_for_state(args.run_dir, want | {"failed", "killed"}, args.timeout)
    _print_status(status, False)
    if status.state not in want:
        raise UserError(f"the run did not {cmd} within {args.timeout:g} s (it is "
                        f"{status.state}); check it with `graftlab status {args.run_dir}`.")
    return 0


def spawn_detached(train_args: list[str], run_dir: Path) -> subprocess.Popen[bytes]:
    """Start `graftlab train_args...` in its own session (it outlives this process and its
    terminal), with its output appended to RUN/train.log."""
    from graftlab.core.train.live import is_live, mark_starting

    if is_live(run_dir):
        raise UserError(f"{run_dir} is being trained by another process; stop it with "
                        f"`graftlab stop {run_dir}` or choose another folder.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if getattr(sys, "frozen", False):
        cmd = [sys.executable, *train_args]
    else:
        cmd = [sys.executable, "-m", "graftlab.core.cli", *train_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / DETACH_LOG, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    mark_starting(run_dir, proc.pid)  # `status` says "running" until the run takes its lock
    return proc


def start_detached(train_args: list[str], run_dir: Path) -> int:
    """`graftlab train --detach`: spawn the run and return at once with the run folder printed
    (the run.yaml was checked before; a later failure is in `graftlab status` and the log)."""
    log_path = run_dir / DETACH_LOG
    proc = spawn_detached(train_args, run_dir)
    print(f"run folder: {run_dir}")
    sys.stderr.write(f"training in the background (pid {proc.pid}, log {log_path}); follow it "
                     f"with `graftlab status {run_dir}`, pause or stop it with `graftlab pause "
                     f"{run_dir}` / `graftlab stop {run_dir}`.\n")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="what a run is doing: running, paused, stopping, stopped, "
                       "finished, failed or killed")
    p.add_argument("run_dir", help="the run folder")
    p.add_argument("--json", action="store_true", help='print {"state", "step", "max_steps", '
                   '"loss", "pid"}')
    p.set_defaults(func=cmd_status)
    for name, text in (("pause", "pause a running run after its current step"),
                       ("continue", "continue a paused run"),
                       ("stop", "stop a run after its current step and save its adapter")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="the run folder")
        p.add_argument("--no-wait", action="store_true", help="return once asked, without "
                       "waiting for the run to act on it")
        p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (600)")
        if name == "stop":
            p.add_argument("--no-save", action="store_true", help="do not save the adapter")
        p.set_defaults(func=cmd_control)
