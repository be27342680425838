"""Follow (and steer) a run that lives on its own, through its run folder.

`AttachedSession` has the interface of `ProcessSession` (constructed with `(cfg, sinks, resume)`,
then `run()`, `request_pause/resume/stop`, `paused`, `phase`), so the window's worker runs it
unchanged. The difference: the training process is not this process's child. Started by the
session (`graftlab train --detach`), or already running when the window opened (`attach=True`),
it keeps training when the window closes, and any later window can attach to it again.

What flows where: events are read from RUN/metrics.jsonl (all of it first, so the plots are
rebuilt, then line by line as they are written); pause, continue and stop go through
RUN/control.json (graftlab.core.train.live). `leave()` stops following without touching the
run: that is what closing the window does.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.events import Event, Saving, Sink, event_from_dict
from graftlab.core.train.lifecycle import RunControl
from graftlab.core.train.live import is_live, read_live, run_status, send_control

POLL_S = 0.1


class AttachedSession(RunControl):
    """A run in its own process, followed through its run folder.

    `attach=False`: start `cfg` (or `--resume` its folder) as a detached run first.
    `attach=True`: follow the run already training in `cfg.training.output_dir`.
    """

    keeps_running = True  # closing the window leaves the run going (see `leave`)

    def __init__(self, cfg: RunConfig, sinks: Sequence[Sink] = (), resume: bool = False,
                 attach: bool = False) -> None:
        super().__init__()
        self.cfg, self.resume, self.attach = cfg, resume, attach
        self.sinks = list(sinks)
        self.run_dir = Path(cfg.training.output_dir).expanduser().absolute()
        self._leave = threading.Event()
        self._pending: list[tuple[str, bool]] = []  # requests made before the run was live
        self._live_seen = False
        self._lock = threading.Lock()
        self._saving = False
        self._request: Path | None = None  # the run.yaml this session wrote for a start
        self._proc: Any = None  # the detached process this session started
        self._started_at = 0.0

    # control (any thread)
    def request_pause(self) -> None:
        if self.lifecycle.request_pause():
            self._send("pause")

    def request_resume(self) -> None:
        if self.lifecycle.request_resume():
            self._send("continue")

    def request_stop(self, save: bool = True) -> None:
        super().request_stop(save)
        self._send("stop", self.save_on_stop)

    def leave(self) -> None:
        """Stop following; the run goes on (the window is closing)."""
        self._leave.set()

    @property
    def saving(self) -> bool:
        return self._saving

    def snapshot_adapter(self, out_dir: str | Path, overwrite: bool = False) -> Any:
        """Export while paused: the training process (rank 0 of a multi-process run) saves
        its adapter to `out_dir`, asked through the run folder."""
        from graftlab.core.train.live import request_export

        return request_export(self.run_dir, out_dir, overwrite)

    def _send(self, cmd: str, save: bool = True) -> None:
        with self._lock:
            if not self._live_seen:
                self._pending.append((cmd, save))
                return
        with contextlib.suppress(UserError):  # ended meanwhile: run() reports how
            send_control(self.run_dir, cmd, save)

    # the run (one thread)
    def _start(self) -> None:
        from graftlab.core.live_commands import spawn_detached

        if self.resume:
            argv = ["train", "--resume", str(self.run_dir)]
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd, request = tempfile.mkstemp(prefix=".graftlab-request-", suffix=".yaml",
                                           dir=self.run_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.cfg.to_yaml())
            self._request = Path(request)
            argv = ["train", request, "--output", str(self.run_dir)]
        self._started_at = time.time()
        self._proc = spawn_detached(argv, self.run_dir)

    def run(self) -> Any:
        from graftlab.core.train.session import RunResult

        if not self.attach:
            self._start()
        elif not is_live(self.run_dir):
            status = run_status(self.run_dir)
            raise UserError(f"the run in {self.run_dir} is not running any more (it is "
                            f"{status.state}); open its folder to see its results.")
        metrics = self.run_dir / "metrics.jsonl"
        offset, partial = self._first_offset(), b""
        finished: dict[str, Any] | None = None
        failed: dict[str, Any] | None = None
        while True:
            live = is_live(self.run_dir)  # before reading: a free lock means all is written
            if live and not self._live_seen:
                with self._lock:
                    self._live_seen = True
                    pending, self._pending = self._pending, []
                for cmd, save in pending:
                    self._send(cmd, save)
            chunk = b""
            with contextlib.suppress(OSError), open(metrics, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()  # an unfinished last line waits for its end
            for line in lines:
                event = self._decode(line)
                if event is None:
                    continue
                if event.kind == "finished":
                    finished = event.to_dict()
                elif event.kind == "failed":
                    failed = event.to_dict()
                elif event.kind == "started":
                    finished = failed = None  # a resumed run starts again
                self.lifecycle.apply(event)
                self._saving = isinstance(event, Saving)
                for sink in self.sinks:
                    sink(event)
            if self._leave.is_set():
                return None
            if not live and (self._live_seen or self.attach or finished or failed
                             or (self._proc is not None and self._proc.poll() is not None)):
                break  # ended (or, never seen live, its process is gone)
            time.sleep(POLL_S)
        if self._request is not None:
            with contextlib.suppress(OSError):
                self._request.unlink()  # ours: the request the detached run has read
        self.lifecycle.end(failed=finished is None)
        if finished is not None:
            adapter = finished.get("adapter_dir")
            return RunResult(self.run_dir, Path(adapter) if adapter else None,
                             int(finished.get("step") or 0), bool(finished.get("stopped_early")),
                             finished.get("train_loss"))
        if failed is not None:
            raise UserError(failed.get("message") or "the run failed.")
        status = run_status(self.run_dir)
        raise UserError(status.message or
                        f"the run in {self.run_dir} ended without a final event (its process "
                        f"was killed); its last checkpoint can be continued with Run > Resume "
                        f"run. Its output is in {self.run_dir / 'train.log'}.")

    def _first_offset(self) -> int:
        """Where to start reading: the beginning (the plots are rebuilt from the whole history),
        except for a resume started here, whose history up to its checkpoint the window already
        shows: then where the new process began appending, after it truncated the file."""
        if not self.resume or self.attach or self._proc is None:
            return 0
        while self._proc.poll() is None and not self._leave.is_set():
            live = read_live(self.run_dir)
            # ours: the process started here, or (several processes) its rank 0, which took
            # the lock after the start
            ours = live.get("pid") == self._proc.pid or \
                float(live.get("updated_at") or 0) >= self._started_at
            if ours and live.get("metrics_offset") is not None:
                return int(live["metrics_offset"])
            time.sleep(POLL_S)
        return (self.run_dir / "metrics.jsonl").stat().st_size \
            if (self.run_dir / "metrics.jsonl").exists() else 0

    @staticmethod
    def _decode(line: bytes) -> Event | None:
        try:
            return event_from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            return None


class ProcessesSession(AttachedSession):
    """A run on several processes (`training.processes` above 1), started from the window.

    `graftlab train` starts torchrun for it; rank 0 writes the run folder, which this session
    follows and steers like a detached run's. Unlike one, it is stopped (with a save) when the
    window closes.
    """

    keeps_running = False


class ReattachedSession(AttachedSession):
    """Follow a run that was already training when the window opened."""

    def __init__(self, cfg: RunConfig, sinks: Sequence[Sink] = (), resume: bool = False) -> None:
        super().__init__(cfg, sinks, resume=False, attach=True)


def live_runs(roots: Sequence[str | Path], depth: int = 2) -> list[Path]:
    """Run folders under `roots` (up to `depth` levels down) that a process trains in now."""
    found: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        level = [root]
        for _ in range(depth + 1):
            nxt = []
            for folder in level:
                if (folder / "live.json").is_file() and is_live(folder):
                    found.append(folder)
                    continue
                with contextlib.suppress(OSError):
                    nxt.extend(p for p in folder.iterdir() if p.is_dir()
                               and not p.name.startswith("."))
            level = nxt
    return sorted(set(found))
