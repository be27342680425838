"""One heavy call in a short-lived child process: the accelerator probe and merges.

The window's process must never initialise CUDA (a CUDA context costs hundreds of MB of GPU
memory and cannot be given back) nor hold a base model's full weights (a merge loads them all).
`call_in_child(name, **kwargs)` starts `python -m graftlab.core.process.oneshot`, sends one JSON
line ``{"call": name, "kwargs": {...}}`` and waits for one line back: ``{"result": ...}`` or
``{"error": {message, user_error, field, traceback}}``. A user error comes back as the same
UserError sentence; anything else raises OneshotError with the child's traceback.

Only the calls named in `CALLS` can be asked for; the child imports nothing else first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

from graftlab.core.errors import UserError

ONESHOT_ARG = "_call"  # hidden `graftlab` subcommand that runs the child (frozen builds)


class OneshotError(RuntimeError):
    """The child failed with an internal error, or ended without an answer."""


def _probe() -> dict[str, Any]:
    from graftlab.core.train.device import probe_accelerator

    return probe_accelerator().to_dict()


def _merge(model_source: str, adapter_dir: str, out_dir: str, task: str = "auto",
           trust_remote_code: bool = False) -> list[list[Any]]:
    from graftlab.core.adapter.export import export_merged

    files = export_merged(model_source, adapter_dir, out_dir, task, trust_remote_code)
    return [[str(p), int(n)] for p, n in files]


CALLS: dict[str, Callable[..., Any]] = {"probe": _probe, "merge": _merge}


def oneshot_command() -> list[str]:
    if getattr(sys, "frozen", False):  # PyInstaller: the executable is `graftlab`
        return [sys.executable, ONESHOT_ARG]
    return [sys.executable, "-m", "graftlab.core.process.oneshot"]


def call_in_child(name: str, timeout_s: float | None = None, **kwargs: Any) -> Any:
    """Run `CALLS[name](**kwargs)` in a new child process and return its JSON result.

    Blocks (call it off the GUI thread). The child's stderr is kept for the error message.

    Raises:
        UserError: the call's own user error (same sentence and field).
        OneshotError: an internal error in the child, a crash, or `timeout_s` passed.
    """
    if name not in CALLS:
        raise ValueError(f"no such out-of-process call: {name!r}")
    request = json.dumps({"call": name, "kwargs": kwargs}) + "\n"
    try:
        done = subprocess.run(oneshot_command(), input=request.encode(), capture_output=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OneshotError(f"the {name} process did not answer within {timeout_s:g} s") from exc
    answer: dict[str, Any] | None = None
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and ("result" in message or "error" in message):
            answer = message
    if answer is None:
        tail = done.stderr.decode("utf-8", "replace")[-4000:]
        raise OneshotError(f"the {name} process exited with code {done.returncode} without "
                           f"an answer.\n\n{tail}".rstrip())
    if "error" in answer:
        error = answer["error"]
        if error.get("user_error"):
            raise UserError(error["message"], error.get("field"))
        raise OneshotError(f"{error['message']}\n\n{error.get('traceback', '')}".rstrip())
    return answer["result"]


def oneshot_main() -> int:
    """Entry point of the child: one request on stdin, one answer on the original stdout."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr, never into the answer
    with os.fdopen(answer_fd, "w", encoding="utf-8") as out:
        try:
            request = json.loads(sys.stdin.readline() or "{}")
            call = CALLS[request["call"]]
            out.write(json.dumps({"result": call(**request.get("kwargs", {}))}) + "\n")
            return 0
        except UserError as exc:
            out.write(json.dumps({"error": {"message": exc.message, "user_error": True,
                                            "field": exc.field, "traceback": ""}}) + "\n")
            return 2
        except Exception as exc:  # sent to the parent, never lost
            out.write(json.dumps({"error": {"message": f"internal error: {exc}",
                                            "user_error": False, "field": None,
                                            "traceback": traceback.format_exc()}}) + "\n")
            return 1


if __name__ == "__main__":
    sys.exit(oneshot_main())
