"""Run a TrainingSession in a child process, driven exactly like an in-process one.

Why a process: a training loop runs a lot of Python between its kernels (Trainer, PEFT, the
callbacks). In a thread of the GUI process it competes with the GUI thread for the GIL, which
freezes the window for whole time slices (`tests/bench/bench_ui_stall.py` measures the stalls;
tests/bench/RESULTS.md has the figures). In its own process it competes only for CPU time, which the
OS scheduler shares in slices of a few milliseconds. The run is also protected from the GUI: if the
window's process dies, the child's stdin closes and the child stops after the current step, saving a
checkpoint and the adapter.

`ProcessSession` has the interface of `graftlab.core.train.session.TrainingSession`
(constructed with `(cfg, sinks, resume)`, then `run()`, `request_pause/resume/stop`, `paused`,
`phase`, `stop_requested`, `snapshot_adapter`), so the GUI worker runs either one unchanged.

Protocol, one JSON object per line:

parent -> child (the child's stdin)
    {"config": {...run.yaml as a dict...}, "resume": bool}     always the first line
    {"cmd": "pause"} | {"cmd": "resume"} | {"cmd": "stop", "save": bool}
    {"cmd": "snapshot", "id": n, "dir": "...", "overwrite": bool}
    end of file: the parent is gone; stop after the current step and save.
child -> parent (the child's original stdout; its fd 1 is pointed at stderr so that stray
prints from libraries cannot corrupt the stream)
    {"event": kind, ...}                                         a graftlab.core.train.events Event
    {"reply": "snapshot", "id": n, "files": [[path, size], ...]} or with "error": {...}
    {"result": {run_dir, adapter_dir, steps, stopped_early, train_loss}}   the last line
    {"error": {message, user_error, field, traceback}}                     or this one
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.events import Event, Failed, Saving, Sink, event_from_dict
from graftlab.core.train.lifecycle import RunControl

CHILD_ARG = "_session"  # hidden `graftlab` subcommand that runs the child (frozen builds)
STDERR_TAIL_BYTES = 8000


class TrainingProcessError(RuntimeError):
    """The child failed with an internal error, or ended without saying why."""


def child_command() -> list[str]:
    """How to start the child: this interpreter on this module, or the frozen app itself."""
    if getattr(sys, "frozen", False):  # PyInstaller: the executable is `graftlab`
        return [sys.executable, CHILD_ARG]
    return [sys.executable, "-m", "graftlab.core.process.child"]


def _error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, UserError):
        return {"message": exc.message, "user_error": True, "field": exc.field,
                "traceback": ""}
    return {"message": f"internal error: {exc}", "user_error": False, "field": None,
            "traceback": traceback.format_exc()}


def _raise_error(error: dict[str, Any]) -> None:
    if error.get("user_error"):
        raise UserError(error["message"], error.get("field"))
    raise TrainingProcessError(f"{error['message']}\n\n{error.get('traceback', '')}".rstrip())


# ---- parent side ---------------------------------------------------------------------------
class _Child:
    """A started child process and the temporary file that collects its stderr."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.env = dict(os.environ)
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=self.env,
                                     start_new_session=True)  # no Ctrl+C from the terminal

    def matches(self, command: Sequence[str]) -> bool:
        """Still usable for a run started now with `command` (same environment, alive)."""
        return (self.proc.poll() is None and list(command) == self.command
                and dict(os.environ) == self.env)

    def stderr_tail(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - STDERR_TAIL_BYTES))
        return self.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:  # its output is closed, so it is exiting; a kill here is for a hung exit only
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


_spare_lock = threading.Lock()
_spare: _Child | None = None


def prestart(command: Sequence[str] | None = None) -> None:
    """Start a spare child now, so the next run skips importing torch, transformers and peft
    (about 5-10 s). It waits on its stdin for a run; it exits when this process does."""
    global _spare
    command = list(command) if command is not None else child_command()
    with _spare_lock:
        if _spare is not None and _spare.matches(command):
            return
        old, _spare = _spare, _Child(command)
    if old is not None:
        old.proc.kill()  # a spare for another command or environment; it never had a run
        old.close()


def discard_spare() -> None:
    """End the spare child, if any (it would also end by itself when this process exits).
    It never received a run, so killing it loses nothing."""
    global _spare
    with _spare_lock:
        old, _spare = _spare, None
    if old is not None:
        old.proc.kill()
        old.close()


def _take_child(command: Sequence[str]) -> _Child:
    """The spare child when it fits this run, else a new one."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        if spare.matches(command):
            return spare
        spare.proc.kill()
        spare.close()
    return _Child(command)


class ProcessSession(RunControl):
    """A TrainingSession running in a child process; `run()` blocks until the child is done.

    Events from the child are decoded and handed to `sinks` on the thread that calls `run()`.
    The parent's lifecycle follows its own requests and replays the child's events, so `phase`
    is paused only once the child has said it blocks in its pause. Control requests may come
    from any thread at any time, also before `run()` has started the child: the phase keeps
    them, and they are sent once the child exists.
    """

    def __init__(self, cfg: RunConfig, sinks: Sequence[Sink] = (),
                 resume: bool = False, command: Sequence[str] | None = None) -> None:
        super().__init__()
        self.cfg, self.resume = cfg, resume
        self.sinks = list(sinks)
        self.run_dir = Path(cfg.training.output_dir)
        self.returncode: int | None = None
        self._command = list(command) if command is not None else child_command()
        self._lock = threading.Lock()  # guards _stdin writes and the snapshot table
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: IO[bytes] | None = None
        self._next_id = 0
        self._waiting: dict[int, list[Any]] = {}  # id -> [threading.Event, reply or None]
        self._killed = False
        self._saving = False  # the child reported a checkpoint or adapter write in progress
        self._kill_pending = False

    # control (any thread)
    def request_pause(self) -> None:
        if self.lifecycle.request_pause():
            self._send({"cmd": "pause"})

    def request_resume(self) -> None:
        if self.lifecycle.request_resume():
            self._send({"cmd": "resume"})

    def request_stop(self, save: bool = True) -> None:
        super().request_stop(save)
        self._send({"cmd": "stop", "save": self.save_on_stop})

    @property
    def saving(self) -> bool:
        """True while the child reports that it is writing a checkpoint or the adapter."""
        return self._saving

    def kill(self) -> bool:
        """End the child (SIGKILL), for a run that does not stop when asked. The run folder
        keeps its last complete checkpoint; the step in flight is lost. Before the child
        exists, this is a stop.

        Never while the child reports that it is saving: the kill then waits until the write
        is done (False is returned; True when the child was killed at once)."""
        self.request_stop(save=True)
        with self._lock:
            self._killed = True
            proc = self._proc
            if self._saving:
                self._kill_pending = True
                return False
        if proc is not None and proc.poll() is None:
            proc.kill()
        return True

    def _track_saving(self, event: Event) -> None:
        with self._lock:
            self._saving = isinstance(event, Saving)
            kill_now = self._kill_pending and not self._saving
            if kill_now:
                self._kill_pending = False
            proc = self._proc
        if kill_now and proc is not None and proc.poll() is None:
            proc.kill()

    def snapshot_adapter(self, out_dir: str | Path,
                         overwrite: bool = False) -> list[tuple[Path, int]]:
        """Have the child save its adapter as it is now (only while paused); blocks until done.

        The child waits until its training loop is really blocked between steps."""
        done = threading.Event()
        with self._lock:
            if self._stdin is None:
                raise UserError("the model is not loaded yet; wait for the first step, then "
                                "pause and export.")
            self._next_id += 1
            ident = self._next_id
            self._waiting[ident] = [done, None]
        self._send({"cmd": "snapshot", "id": ident, "dir": str(out_dir),
                    "overwrite": bool(overwrite)})
        done.wait()
        with self._lock:
            reply = self._waiting.pop(ident)[1]
        if reply is None:
            raise UserError("the training process ended before the adapter was saved; export "
                            "the run's final adapter instead.")
        if "error" in reply:
            _raise_error(reply["error"])
        return [(Path(p), int(n)) for p, n in reply["files"]]

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._stdin is None:
                return  # not started yet (state is sent at start) or already finished
            try:
                self._stdin.write((json.dumps(message) + "\n").encode())
                self._stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the child is gone; run() reports how it ended

    # the run (one thread)
    def run(self) -> Any:
        from graftlab.core.train.session import RunResult

        child = _take_child(self._command)
        proc = child.proc
        assert proc.stdin is not None and proc.stdout is not None
        # Under one hold of the lock: the config line, then the requests that came before the
        # child existed, and only then is stdin published for `_send`. So the config is always
        # the first line the child reads, and an early pause or stop is queued behind it.
        with self._lock:
            self._proc = proc
            first = [{"config": self.cfg.to_dict(), "resume": self.resume}]
            if self.paused:
                first.append({"cmd": "pause"})
            if self.stop_requested:
                first.append({"cmd": "stop", "save": self.save_on_stop})
            try:
                proc.stdin.write("".join(json.dumps(m) + "\n" for m in first).encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the child is gone already; the loop below reports how it ended
            self._stdin = proc.stdin
        result, error = None, None
        try:
            for line in proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours (cannot happen: fd 1 is redirected in the child)
                if "event" in message:
                    event = event_from_dict(message)
                    self.lifecycle.apply(event)  # before the sinks: they may ask for the phase
                    self._track_saving(event)
                    for sink in self.sinks:
                        sink(event)
                elif "reply" in message:
                    self._on_reply(message)
                elif "result" in message:
                    result = message["result"]
                elif "error" in message:
                    error = message["error"]
        finally:
            with self._lock:
                self._stdin = None
                for entry in self._waiting.values():
                    entry[0].set()  # a snapshot still waiting gets "ended before"
            tail = child.stderr_tail()
            child.close()
            self.returncode = proc.returncode
        self.lifecycle.end(failed=result is None)
        if result is not None:
            return RunResult(Path(result["run_dir"]),
                             Path(result["adapter_dir"]) if result["adapter_dir"] else None,
                             int(result["steps"]), bool(result["stopped_early"]),
                             result["train_loss"])
        if error is not None:
            _raise_error(error)
        if self._killed:  # asked for: a sentence, not an internal error
            message = (f"the training process was ended before it had stopped; the last "
                       f"complete checkpoint in {self.run_dir} can be continued with Run > "
                       "Resume run, or `graftlab train --resume`.")
            for sink in self.sinks:
                sink(Failed(message, True))
            raise UserError(message)
        message = self._crash_sentence(self.returncode)
        for sink in self.sinks:
            sink(Failed(message, False, tail))
        raise TrainingProcessError(f"{message}\n\nLast output of the training process:\n{tail}")

    def _on_reply(self, message: dict[str, Any]) -> None:
        with self._lock:
            entry = self._waiting.get(message.get("id", -1))
            if entry is not None:
                entry[1] = message
                entry[0].set()

    def _crash_sentence(self, code: int | None) -> str:
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}"
            if -code == signal.SIGKILL:
                how += " (often the system running out of memory)"
        else:
            how = f"exited with code {code} without a result"
        return (f"the training process {how}; the last complete checkpoint in {self.run_dir} "
                "can be continued with Run > Resume run, or `graftlab train --resume`.")


# ---- child side ----------------------------------------------------------------------------
class _Channel:
    """Writes protocol lines to the parent from any thread; a vanished parent stops the run."""

    def __init__(self, stream: IO[str], on_broken: Callable[[], None]) -> None:
        self._stream, self._on_broken = stream, on_broken
        self._lock = threading.Lock()
        self._broken = False

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, allow_nan=True) + "\n"
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._broken = True
        if self._broken:
            self._on_broken()

    def event(self, event: Event) -> None:
        self.send(event.to_dict())


def _serve_commands(session: Any, stdin: IO[str], channel: _Channel) -> None:
    """The child's control thread: applies the parent's commands in order."""
    for line in stdin:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        kind = cmd.get("cmd")
        if kind == "pause":
            session.request_pause()
        elif kind == "resume":
            session.request_resume()
        elif kind == "stop":
            session.request_stop(bool(cmd.get("save", True)))
        elif kind == "snapshot":  # the training thread is blocked in its pause meanwhile
            reply: dict[str, Any] = {"reply": "snapshot", "id": cmd.get("id")}
            try:
                files = session.snapshot_adapter(cmd["dir"], bool(cmd.get("overwrite")))
                reply["files"] = [[str(p), int(n)] for p, n in files]
            except Exception as exc:  # reported to the parent, never lost
                reply["error"] = _error_payload(exc)
            channel.send(reply)
    session.request_stop(save=True)  # end of input: the parent is gone; keep the work


def _warm_imports() -> None:
    """Import what every run needs (most of a run's start-up time) before the run arrives."""
    import graftlab.core.adapter.export  # noqa: F401
    import graftlab.core.data.dataset  # noqa: F401
    import graftlab.core.train.callbacks  # noqa: F401 - transformers.Trainer and friends
    import graftlab.core.train.session  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


def child_main() -> int:
    """Entry point of the child process (`python -m graftlab.core.process.child`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    events_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr, never into the protocol stream
    out = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    session: Any = None

    def stop_and_save() -> None:
        if session is not None:
            session.request_stop(save=True)

    channel = _Channel(out, stop_and_save)
    def on_sigterm(signum: int, frame: Any) -> None:
        if session is None:  # nothing to save yet
            raise SystemExit(128 + signum)
        stop_and_save()  # a run: end it after this step, with a checkpoint and the adapter

    signal.signal(signal.SIGTERM, on_sigterm)
    running = False  # once the session runs, it reports its own failures as events
    try:
        _warm_imports()  # a spare child does this before it is needed
        first = sys.stdin.readline()
        if not first:
            return 0  # a spare that was never used: its parent went away or discarded it
        try:
            start = json.loads(first)
            config = start["config"]
        except (ValueError, KeyError, TypeError):
            raise UserError("the training process did not receive its run settings first; "
                            "start the run again.") from None
        cfg = RunConfig.from_dict(config, where="run settings")
        from graftlab.core.train.session import TrainingSession

        session = TrainingSession(cfg, [channel.event], resume=bool(start.get("resume")))
        threading.Thread(target=_serve_commands, args=(session, sys.stdin, channel),
                         name="graftlab-commands", daemon=True).start()
        running = True
        result = session.run()
    except Exception as exc:  # sent to the parent as the last line
        error = _error_payload(exc)
        if not running:
            channel.event(Failed(error["message"], error["user_error"], error["traceback"],
                                 error["field"]))
        channel.send({"error": error})
        return 2 if isinstance(exc, UserError) else 1
    channel.send({"result": {
        "run_dir": str(result.run_dir),
        "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
        "steps": result.steps, "stopped_early": result.stopped_early,
        "train_loss": result.train_loss}})
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
