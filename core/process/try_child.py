"""The Try process: one base model, many adapters, kept loaded between requests.

The window never holds model weights: its Try tab drives this long-lived child
(`python -m graftlab.core.process.try_child`) through `TryProcess`, and the child runs
graftlab.core.adapter.playground.Playground.

Protocol, one JSON object per line:

parent -> child (stdin)
    {"id": n, "cmd": "load", "base": spec, "task": t, "num_labels": k, "label_names": [...]}
    {"id": n, "cmd": "attach", "dir": folder, "name": name or null}
    {"id": n, "cmd": "generate", "prompt", "system", "chat", "sides": [...], "options": {...}}
    {"id": n, "cmd": "classify", "text", "sides": [...]}
    {"id": n, "cmd": "info"}
    {"cmd": "stop", "id": n}     read at once (not queued): request n ends after its token
    {"cmd": "quit"} or end of file: the child exits
child -> parent (its original stdout; fd 1 points at stderr so library prints stay out)
    {"id": n, "side": s, "text": piece}      streamed text of a generate request
    {"id": n, "side": s, "done": text}       one side of a generate request is complete
    {"id": n, "result": {...}} or {"id": n, "error": {message, user_error, field, traceback}}
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from graftlab.core.errors import UserError
from graftlab.core.process.child import _Child, _error_payload, _raise_error

TRY_ARG = "_try"  # hidden `graftlab` subcommand that runs the child (frozen builds)
OnPiece = Callable[[str, str], None]  # (side, text)


class TryProcessError(RuntimeError):
    """The Try process failed with an internal error."""


def try_command() -> list[str]:
    if getattr(sys, "frozen", False):  # PyInstaller: the executable is `graftlab`
        return [sys.executable, TRY_ARG]
    return [sys.executable, "-m", "graftlab.core.process.try_child"]


# ---- parent side ---------------------------------------------------------------------------
class TryProcess:
    """The parent's handle on the Try child. `call` blocks (use it off the GUI thread) and
    runs one request at a time; `stop` may be called from any thread."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command) if command is not None else try_command()
        self._child: _Child | None = None
        self._call_lock = threading.Lock()  # one request in flight
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._current: int | None = None

    def is_alive(self) -> bool:
        return self._child is not None and self._child.proc.poll() is None

    def _write(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            child = self._child
            if child is None or child.proc.stdin is None:
                return
            try:
                child.proc.stdin.write((json.dumps(message) + "\n").encode())
                child.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # gone; the reading side reports how it ended

    def call(self, cmd: str, on_piece: OnPiece | None = None, **fields: Any) -> Any:
        """Send request `cmd` and wait for its result; streamed text goes to `on_piece`.

        Raises:
            UserError: the request's own one-sentence error, or the process died (often
                out of memory).
            TryProcessError: an internal error in the child.
        """
        with self._call_lock:
            if not self.is_alive():
                if self._child is not None:
                    self._child.close()
                self._child = _Child(self._command)
            child = self._child
            assert child is not None and child.proc.stdout is not None
            self._next_id += 1
            ident = self._next_id
            self._current = ident
            try:
                self._write({"id": ident, "cmd": cmd, **fields})
                for line in child.proc.stdout:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if message.get("id") != ident:
                        continue  # a late line of an earlier request
                    if "text" in message and on_piece is not None:
                        on_piece(str(message.get("side")), str(message["text"]))
                    elif "result" in message:
                        return message["result"]
                    elif "error" in message:
                        _raise_error(message["error"])
            finally:
                self._current = None
            self._died(child)
        raise AssertionError("unreachable")

    def _died(self, child: _Child) -> None:
        tail = child.stderr_tail()
        child.close()
        self._child = None
        code = child.proc.returncode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
            if -code == signal.SIGKILL:
                raise UserError("the Try process was killed (SIGKILL, most often the system "
                                "running out of memory); load a smaller model or close other "
                                "programs, then load again.", field="model.source")
        else:
            how = f"exited with code {code}"
        raise TryProcessError(f"the Try process {how} without an answer.\n\n{tail}".rstrip())

    def stop(self) -> None:
        """End the generation in flight after its current token (any thread)."""
        ident = self._current
        if ident is not None:
            self._write({"cmd": "stop", "id": ident})

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the child to exit; kill it if it does not within `timeout_s`."""
        child, self._child = self._child, None
        if child is None:
            return
        self._send_quit(child)
        try:
            child.proc.wait(timeout_s)
        except Exception:
            child.proc.kill()
        child.close()

    def _send_quit(self, child: _Child) -> None:
        ident = self._current
        try:
            if child.proc.stdin is not None:
                lines = ([{"cmd": "stop", "id": ident}] if ident is not None else [])
                lines.append({"cmd": "quit"})
                child.proc.stdin.write("".join(json.dumps(m) + "\n" for m in lines).encode())
                child.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass


# ---- child side ----------------------------------------------------------------------------
class _Server:
    """Runs requests in order on the child's main thread; `stop` lines act at once."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self._requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stopped: set[int] = set()
        self.playground: Any = None
        self.base_loads = 0

    def send(self, message: dict[str, Any]) -> None:
        with self._out_lock:
            try:
                self._out.write(json.dumps(message) + "\n")
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                os._exit(0)  # the parent is gone: nothing to keep

    def read_stdin(self, stdin: IO[str]) -> None:
        for line in stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("cmd") == "stop":
                self._stopped.add(int(message.get("id") or 0))
            elif message.get("cmd") == "quit":
                break
            else:
                self._requests.put(message)
        self._requests.put(None)

    def serve(self) -> None:
        while (request := self._requests.get()) is not None:
            ident = int(request.get("id") or 0)
            try:
                result = self._handle(ident, request)
            except Exception as exc:  # reported to the parent, never lost
                self.send({"id": ident, "error": _error_payload(exc)})
            else:
                self.send({"id": ident, "result": result})
            self._stopped.discard(ident)

    def _loaded(self) -> Any:
        if self.playground is None:
            raise UserError("no base model is loaded yet; load one first.",
                            field="model.source")
        return self.playground

    def _handle(self, ident: int, request: dict[str, Any]) -> Any:
        from graftlab.core.adapter.playground import DecodeOptions, Playground

        cmd = request.get("cmd")
        if cmd == "load":
            self.playground = None  # free the old base before loading the new one
            labels = request.get("label_names")
            self.playground = Playground(
                str(request.get("base") or ""), str(request.get("task") or "auto"),
                trust_remote_code=bool(request.get("trust_remote_code")),
                num_labels=request.get("num_labels"), label_names=labels or None)
            self.base_loads += 1
            return self._info()
        if cmd == "attach":
            start = time.perf_counter()
            name = self._loaded().attach(str(request.get("dir") or ""), request.get("name"))
            return self._info() | {"name": name, "attach_s": time.perf_counter() - start}
        if cmd == "info":
            return self._info()
        if cmd == "generate":
            pg = self._loaded()
            options = DecodeOptions(**(request.get("options") or {}))
            texts, seconds, tokens = {}, {}, {}
            for side in request.get("sides") or ["base"]:
                if ident in self._stopped:
                    break
                start = time.perf_counter()
                text = pg.generate(
                    str(request.get("prompt") or ""), side, system=request.get("system"),
                    chat=bool(request.get("chat")), options=options,
                    on_text=lambda piece, s=side: self.send({"id": ident, "side": s,
                                                             "text": piece}),
                    should_stop=lambda: ident in self._stopped)
                texts[side], seconds[side] = text, time.perf_counter() - start
                tokens[side] = len(pg.last_ids)
                self.send({"id": ident, "side": side, "done": text})
            return {"texts": texts, "seconds": seconds, "tokens": tokens,
                    "stopped": ident in self._stopped}
        if cmd == "classify":
            pg = self._loaded()
            text = str(request.get("text") or "")
            return {"probs": {side: pg.classify(text, side)
                              for side in request.get("sides") or ["base"]}}
        raise UserError(f"the Try process does not know the request {cmd!r}.")

    def _info(self) -> dict[str, Any]:
        return self._loaded().info() | {"base_loads": self.base_loads}


def try_main() -> int:
    """Entry point of the child process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_fd = os.dup(1)
    os.dup2(2, 1)  # library prints go to stderr, never into the protocol stream
    out = os.fdopen(out_fd, "w", encoding="utf-8", buffering=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the window's Ctrl+C is not ours
    import graftlab.core.adapter.playground  # noqa: F401
    import peft  # noqa: F401 - warm up what every request needs
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from graftlab.core.model.loading import quiet_libraries

    quiet_libraries()
    server = _Server(out)
    threading.Thread(target=server.read_stdin, args=(sys.stdin,), daemon=True,
                     name="graftlab-try-stdin").start()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(try_main())
