"""A fast scripted stand-in for graftlab.core.train.session.TrainingSession (monkeypatched into
graftlab.app.run.worker).

It honours pause/resume/stop like the real session: `Paused` right before it blocks, `Resumed`
right after, a checkpoint-free `Finished` at the end. `snapshot_adapter` writes a small file and
records whether training stayed blocked for the whole save.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from graftlab.core.errors import UserError
from graftlab.core.train.events import Failed, Finished, Paused, Resumed, Started, Step
from graftlab.core.train.lifecycle import RunControl


@dataclass
class FakeResult:
    run_dir: Path
    adapter_dir: Path | None
    steps: int
    stopped_early: bool
    train_loss: float | None = None


class FastSession(RunControl):
    step_time_s = 0.0
    snapshot_time_s = 0.0
    fail_with: BaseException | None = None
    created = 0
    resumed_flags: list[bool] = []
    snapshot_log: list[tuple[str, bool]] = []  # (out_dir, training stayed blocked)
    snapshot_threads: list[str] = []  # the thread each save ran on
    ignore_stop = False  # a run that does not stop when asked: only kill() ends it
    killed = False

    def __init__(self, cfg, sinks, resume: bool = False) -> None:
        super().__init__()
        self.cfg, self.sinks, self.resume = cfg, list(sinks), resume
        self.step = 0
        type(self).created += 1
        type(self).resumed_flags.append(resume)

    def kill(self) -> None:
        """Like ProcessSession.kill: ends the run at once, with the same kind of sentence."""
        self.killed = True
        self.request_stop(True)

    def _should_end(self) -> bool:
        return self.killed or (self.stop_requested and not self.ignore_stop)

    def emit(self, ev) -> None:
        for sink in self.sinks:
            sink(ev)

    def snapshot_adapter(self, out_dir):
        type(self).snapshot_threads.append(threading.current_thread().name)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        step = self.step
        deadline = time.monotonic() + self.snapshot_time_s
        blocked = True
        while True:  # the save "takes a while"; training must not move meanwhile
            blocked = blocked and self.paused and self.step == step
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        (out / "adapter_model.safetensors").write_bytes(b"step %d" % step)
        type(self).snapshot_log.append((str(out), blocked))
        return [(out / "adapter_model.safetensors", out.joinpath(
            "adapter_model.safetensors").stat().st_size)]

    def run(self) -> FakeResult:
        run_dir = Path(self.cfg.training.output_dir)
        if self.fail_with is not None:
            exc = self.fail_with
            self.emit(Failed(exc.message if isinstance(exc, UserError) else "boom",
                             isinstance(exc, UserError)))
            raise exc
        total = self.cfg.training.max_steps
        self.emit(Started(str(run_dir), total, 10, 1000, "cpu", "fp32", 8))
        while self.step < total and not self._should_end():
            if self.step_time_s:
                time.sleep(self.step_time_s)
            self.step += 1
            self.emit(Step(self.step, 1.0 / self.step, 1e-4, 1.0, 0.0, 100.0, self.step,
                           0.0, None, 1.0))
            if self.paused and not self.stop_requested:
                self.emit(Paused(self.step))
                self.wait_while_paused()
                if not self.stop_requested:
                    self.emit(Resumed(self.step))
        if self.killed:
            message = ("the training process was ended before it had stopped; the last "
                       f"complete checkpoint in {run_dir} can be continued with Run > Resume run.")
            self.emit(Failed(message, True))
            raise UserError(message)
        stopped = self.stop_requested
        adapter = run_dir / "adapter" if (not stopped or self.save_on_stop) else None
        self.emit(Finished(self.step, stopped, str(adapter) if adapter else None, None, 0.0))
        return FakeResult(run_dir, adapter, self.step, stopped)


def fresh_fake(**attrs) -> type[FastSession]:
    """A subclass with its own counters, so tests do not see each other's runs."""
    base = {"created": 0, "resumed_flags": [], "snapshot_log": [], "snapshot_threads": [],
            "fail_with": None, "step_time_s": 0.0, "snapshot_time_s": 0.0, "ignore_stop": False}
    return type("Fake", (FastSession,), base | attrs)
