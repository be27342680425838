"""A run that can be found and controlled through its folder, by any process of the same user.

While a training process runs, it keeps three small files in its run folder:

``.graftlab-live.lock``
    held with an exclusive ``flock`` for as long as the process lives. The kernel drops the lock
    when the process dies, however it dies, so "the lock is free" means "nobody trains here"
    even when a stale pid was reused by another program. It also keeps two processes from
    training into one folder at once (a double ``--resume``).
``live.json``
    ``{"pid", "uid", "host", "phase", "step", "error", "metrics_offset", "updated_at"}``,
    rewritten (atomically) on every phase change; ``metrics_offset`` is the size metrics.jsonl
    had when this process began appending to it (after a resume's truncation).
``control.json``
    written by ``graftlab pause|continue|stop DIR`` (or the window): ``{"seq", "cmd", "save"}``,
    or ``{"seq", "cmd": "export", "path", "overwrite"}`` to save the adapter of a paused run
    (the answer, ``{"seq", "files"}`` or ``{"seq", "error"}``, goes to ``export.json``).
    The training process polls it a few times a second (also while paused) and acts on each new
    ``seq`` once. A control file not owned by the training process's user is ignored, and the
    folder's owner is checked before one is written: only the user who owns a run controls it.

No network port is opened. :func:`run_status` reads these files plus metrics.jsonl to say what a
run is doing; a dead process without a final event is reported as ``killed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from graftlab.core.atomic import atomic_write_text
from graftlab.core.errors import UserError
from graftlab.core.train.lifecycle import RunControl, RunPhase

LOCK_NAME = ".graftlab-live.lock"
LIVE_NAME = "live.json"
CONTROL_NAME = "control.json"
EXPORT_NAME = "export.json"
POLL_S = 0.2
COMMANDS = ("pause", "continue", "stop")
STATES = ("running", "paused", "stopping", "stopped", "finished", "failed", "killed")

# The live phase -> the state a user reads.
_LIVE_STATE = {RunPhase.STARTING: "running", RunPhase.RUNNING: "running",
               RunPhase.PAUSING: "running", RunPhase.PAUSED: "paused",
               RunPhase.STOPPING: "stopping"}


class RunBusyError(UserError):
    """Another live process trains in this run folder."""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_live(run_dir: str | Path) -> bool:
    """True while a process holds the run folder's lock (it trains there right now)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return False


class LivePresence:
    """The training process's side: holds the lock, keeps live.json, obeys control.json.

    `control` is the session (pause/resume/stop requests); `step` is read for live.json.
    """

    def __init__(self, run_dir: Path, control: RunControl) -> None:
        self.run_dir = Path(run_dir)
        self.control = control
        self.step = 0
        self.error: str | None = None  # a failed run's sentence
        self.metrics_offset: int | None = None  # where this process's metrics.jsonl lines begin
        self._fd: int | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Take the lock (refusing a folder another process trains in) and start obeying."""
        if self._fd is not None:
            return
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 2.0  # a status probe holds a shared lock for microseconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    live = _read_json(self.run_dir / LIVE_NAME) or {}
                    raise RunBusyError(
                        f"{self.run_dir} is being trained by another process (pid "
                        f"{live.get('pid', '?')}); stop it with `graftlab stop {self.run_dir}` "
                        "or choose another folder.", field="training.output_dir") from None
                time.sleep(0.02)
        self._fd = fd
        control = _read_json(self.run_dir / CONTROL_NAME) or {}
        self._seq = int(control.get("seq", 0) or 0)  # requests from before this process: done
        self.write()
        self.control.lifecycle.watch(lambda _old, _new: self.write())
        self._thread = threading.Thread(target=self._poll, name="graftlab-control", daemon=True)
        self._thread.start()

    def write(self) -> None:
        if self._fd is None:
            return
        with self._write_lock:
            atomic_write_text(self.run_dir / LIVE_NAME, json.dumps({
                "pid": os.getpid(), "uid": os.getuid(), "host": socket.gethostname(),
                "phase": str(self.control.phase), "step": self.step, "error": self.error,
                "metrics_offset": self.metrics_offset, "updated_at": time.time()}))

    def _poll(self) -> None:
        path = self.run_dir / CONTROL_NAME
        last_mtime = None
        while not self._stop.wait(POLL_S):
            try:
                st = path.stat()
            except OSError:
                continue
            if st.st_mtime_ns == last_mtime:
                continue
            last_mtime = st.st_mtime_ns
            if st.st_uid != os.getuid():
                continue  # only the run's own user controls it
            self.apply(_read_json(path) or {})

    def apply(self, request: dict[str, Any]) -> bool:
        """Act on one control request if it is new; returns whether it was."""
        seq = request.get("seq")
        if not isinstance(seq, int) or seq <= self._seq:
            return False
        self._seq = seq
        cmd = request.get("cmd")
        if cmd == "pause":
            self.control.request_pause()
        elif cmd == "continue":
            self.control.request_resume()
        elif cmd == "stop":
            self.control.request_stop(save=bool(request.get("save", True)))
        elif cmd == "export":
            threading.Thread(target=self._export, args=(seq, request), daemon=True,
                             name="graftlab-export").start()
        return cmd in (*COMMANDS, "export")

    def _export(self, seq: int, request: dict[str, Any]) -> None:
        """Save the paused run's adapter where the request says; the answer in export.json."""
        answer: dict[str, Any] = {"seq": seq}
        try:
            snapshot = getattr(self.control, "snapshot_adapter", None)
            if snapshot is None or not isinstance(request.get("path"), str):
                raise UserError("this run cannot export its adapter while paused.")
            files = snapshot(request["path"], bool(request.get("overwrite", False)))
            answer["files"] = [[str(p), int(n)] for p, n in files]
        except UserError as exc:
            answer["error"] = exc.message
        except Exception as exc:  # the run goes on; the asker gets the reason
            answer["error"] = f"the adapter could not be saved ({exc})."
        atomic_write_text(self.run_dir / EXPORT_NAME, json.dumps(answer), mode=0o600)

    def close(self) -> None:
        """The run is over: write the final phase, stop polling, release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._fd is not None:
            self.write()
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def read_live(run_dir: str | Path) -> dict[str, Any]:
    """live.json as a dict ({} when missing or torn)."""
    return _read_json(Path(run_dir) / LIVE_NAME) or {}


def mark_starting(run_dir: Path, pid: int) -> None:
    """live.json for a run whose process `pid` was started but holds no lock yet."""
    atomic_write_text(Path(run_dir) / LIVE_NAME, json.dumps({
        "pid": pid, "uid": os.getuid(), "host": socket.gethostname(), "phase": "starting",
        "step": 0, "error": None, "updated_at": time.time()}))


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


# ---- any process of the user: status and control --------------------------------------------
@dataclass
class RunStatus:
    run_dir: str
    state: str
    step: int
    max_steps: int | None
    loss: float | None
    pid: int | None
    message: str | None = None
    """Why a failed run failed."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tail_lines(path: Path, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines  # the first may be cut


def _metrics_summary(run_dir: Path) -> dict[str, Any]:
    """Last step, loss, planned steps and the final event of metrics.jsonl (reads its ends)."""
    path = run_dir / "metrics.jsonl"
    out: dict[str, Any] = {"step": 0, "loss": None, "max_steps": None, "end": None}
    try:
        with open(path, encoding="utf-8") as fh:
            for _, line in zip(range(200), fh, strict=False):  # `started` comes early
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == "started":
                        out["max_steps"] = ev.get("total_steps")
    except OSError:
        return out
    for line in reversed(_tail_lines(path)):
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # a torn last line
        kind = ev.get("event")
        if out["end"] is None and kind in ("finished", "failed", "started"):
            out["end"] = ev  # the latest of these says how the (last) process ended
        if kind == "step" and out["loss"] is None:
            out["step"], out["loss"] = ev.get("step", 0), ev.get("loss")
        if out["end"] is not None and out["loss"] is not None:
            break
    return out


def run_status(run_dir: str | Path) -> RunStatus:
    """What the run in `run_dir` is doing now; a UserError if the folder holds no run."""
    run_dir = Path(run_dir).expanduser()
    live_path, metrics = run_dir / LIVE_NAME, run_dir / "metrics.jsonl"
    if not run_dir.is_dir() or not (live_path.exists() or metrics.exists()):
        raise UserError(f"{run_dir} is not a Graftlab run folder (no live.json or "
                        "metrics.jsonl); pass the folder a run writes to.")
    live = _read_json(live_path) or {}
    summary = _metrics_summary(run_dir)
    pid = live.get("pid")
    if is_live(run_dir):
        state = _LIVE_STATE.get(RunPhase(live.get("phase", "running")), "running") \
            if live.get("phase") in set(RunPhase) else "running"
        step = max(int(live.get("step") or 0), int(summary["step"] or 0))
        return RunStatus(str(run_dir), state, step, summary["max_steps"], summary["loss"], pid)
    end = summary["end"] or {}
    message = None
    if end.get("event") == "finished":
        state = "stopped" if end.get("stopped_early") else "finished"
        step = int(end.get("step") or summary["step"] or 0)
    elif end.get("event") == "failed":
        state, step, message = "failed", int(summary["step"] or 0), end.get("message")
    elif live.get("phase") == "starting" and _pid_alive(pid):  # importing, not locked yet
        state, step = "running", 0
    elif live.get("phase") in ("failed", "finished") or (live.get("phase") == "starting"
                                                          and _log_error(run_dir)):
        message = live.get("error") or _log_error(run_dir)  # ended before metrics.jsonl
        state, step = ("failed" if message or live["phase"] != "finished" else "stopped"), 0
    else:  # started (or nothing) and nobody holds the lock: the process died without a word
        state, step = "killed", int(summary["step"] or 0)
    return RunStatus(str(run_dir), state, step, summary["max_steps"], summary["loss"], pid,
                     message)


def _log_error(run_dir: Path) -> str | None:
    """The last `error:` sentence of a detached run's train.log."""
    try:
        lines = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(lines.splitlines()[-30:]):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return None


def send_control(run_dir: str | Path, cmd: str, save: bool = True,
                 **extra: Any) -> RunStatus:
    """Ask the live run in `run_dir` to pause, continue or stop (or export, with `extra`
    ``path`` and ``overwrite``); returns its status before."""
    if cmd not in (*COMMANDS, "export"):
        raise UserError(f"unknown run command {cmd!r}; use one of {', '.join(COMMANDS)}.")
    run_dir = Path(run_dir).expanduser()
    status = run_status(run_dir)
    if status.state not in ("running", "paused", "stopping"):
        raise UserError(f"the run in {run_dir} is not running (it is {status.state}); there is "
                        "nothing to " + cmd + ".")
    owner = run_dir.stat().st_uid
    if owner != os.getuid():
        raise UserError(f"{run_dir} belongs to another user (uid {owner}); only the user who "
                        "owns a run can control it.")
    path = run_dir / CONTROL_NAME
    previous = _read_json(path) or {}
    seq = int(previous.get("seq", 0) or 0) + 1
    atomic_write_text(path, json.dumps({"seq": seq, "cmd": cmd, "save": save, "pid": os.getpid(),
                                        "at": time.time(), **extra}), mode=0o600)  # owner's
    return status


def request_export(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False,
                   timeout_s: float = 120.0) -> list[tuple[Path, int]]:
    """Have the paused run in `run_dir` save its adapter to `out_dir` (the training process
    writes it, as an export from the window would); returns the files written."""
    run_dir = Path(run_dir).expanduser()
    status = run_status(run_dir)
    if status.state != "paused":
        raise UserError(f"the run in {run_dir} is {status.state}; pause it before exporting its "
                        "adapter mid-training.")
    before = (_read_json(run_dir / CONTROL_NAME) or {}).get("seq", 0) or 0
    send_control(run_dir, "export", path=str(Path(out_dir).expanduser().absolute()),
                 overwrite=overwrite)
    seq = int(before) + 1
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = _read_json(run_dir / EXPORT_NAME) or {}
        if answer.get("seq") == seq:
            if answer.get("error"):
                raise UserError(str(answer["error"]))
            return [(Path(p), int(n)) for p, n in answer.get("files", [])]
        if not is_live(run_dir):
            break
        time.sleep(0.05)
    raise UserError(f"the run in {run_dir} did not answer the export within {timeout_s:g} s; "
                    "check that it is still paused, then try again.")


def wait_for_state(run_dir: str | Path, states: set[str], timeout_s: float) -> RunStatus:
    """Poll the run's status until it is one of `states` (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = run_status(run_dir)
        if status.state in states or time.monotonic() > deadline:
            return status
        time.sleep(0.1)
